"""The inference engine: MLX in its own process, continuous batching, prompt-cache reuse.

Nothing in here knows about HTTP. `AsyncEngine` (asyncio) and `Engine` (blocking) start and
supervise the engine process and speak to it over ZMQ in the vocabulary of `impetus.protocol`
(requests, events, status, errors), which callers import from there: one home for each type.
"""

from impetus.engine.client import AsyncEngine, Generation
from impetus.engine.sync import Engine, SyncGeneration

__all__ = ["AsyncEngine", "Engine", "Generation", "SyncGeneration"]
