"""The inference engine: MLX in its own process, continuous batching, prompt-cache reuse.

Nothing in here knows about HTTP. `AsyncEngine` (asyncio) and `Engine` (blocking) start and
supervise the engine process and speak to it over ZMQ in the vocabulary of `impetus.protocol`,
whose main types are re-exported here for convenience.
"""

from impetus.engine.client import AsyncEngine, Generation
from impetus.engine.sync import Engine, SyncGeneration
from impetus.protocol import (
    Delta,
    Done,
    EmbedResult,
    EngineError,
    EngineStats,
    EngineStatus,
    Event,
    Failed,
    GenerateRequest,
    ModelState,
    SamplingParams,
    Start,
    Timings,
    TokenLogprob,
    ToolCall,
    Usage,
)

__all__ = [
    "AsyncEngine",
    "Delta",
    "Done",
    "EmbedResult",
    "Engine",
    "EngineError",
    "EngineStats",
    "EngineStatus",
    "Event",
    "Failed",
    "GenerateRequest",
    "Generation",
    "ModelState",
    "SamplingParams",
    "Start",
    "SyncGeneration",
    "Timings",
    "TokenLogprob",
    "ToolCall",
    "Usage",
]
