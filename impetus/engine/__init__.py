"""The inference engine: MLX in its own process, continuous batching, prompt-cache reuse.

Nothing in here knows about HTTP. `AsyncEngine` (asyncio) and `Engine` (blocking) start and
supervise the engine process and speak to it over ZMQ.
"""

from impetus.engine.client import AsyncEngine, Generation
from impetus.engine.sync import Engine, SyncGeneration
from impetus.engine.types import (
    EmbedResult,
    EngineError,
    EngineStats,
    EngineStatus,
    Event,
    GenerateRequest,
    ModelState,
    SamplingParams,
    Timings,
    TokenLogprob,
    ToolCall,
    Usage,
)

__all__ = [
    "AsyncEngine",
    "EmbedResult",
    "Engine",
    "EngineError",
    "EngineStats",
    "EngineStatus",
    "Event",
    "GenerateRequest",
    "Generation",
    "ModelState",
    "SamplingParams",
    "SyncGeneration",
    "Timings",
    "TokenLogprob",
    "ToolCall",
    "Usage",
]
