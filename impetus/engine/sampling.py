"""Samplers and logits processors for one request, built on mlx-lm's.

Seeded requests get a sampler that owns its PRNG key, so the same seed gives the same text
whatever else shares the batch: no need to drain the batch the way mlx-lm's server does.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    make_logits_processors,
    make_sampler,
)

from impetus.protocol import EngineError, SamplingParams

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


def _seeded_sampler(p: SamplingParams) -> Sampler:
    key = mx.random.key(p.seed or 0)
    inv_temp = 1.0 / p.temperature

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        if 0.0 < p.top_p < 1.0:
            logprobs = apply_top_p(logprobs, p.top_p)
        if p.min_p > 0.0:
            logprobs = apply_min_p(logprobs, p.min_p, 1)
        if p.top_k > 0:
            logprobs = apply_top_k(logprobs, p.top_k)
        key, sub = mx.random.split(key)
        return mx.random.categorical(logprobs * inv_temp, key=sub)

    return sample


def build_sampler(p: SamplingParams) -> Sampler | None:
    """None means greedy: the batch's shared fallback sampler, so greedy rows sample in one call."""
    if p.temperature == 0.0:
        return None
    if p.seed is not None:
        return _seeded_sampler(p)
    return make_sampler(temp=p.temperature, top_p=p.top_p, min_p=p.min_p, top_k=p.top_k)


def build_logits_processors(p: SamplingParams, vocab_size: int) -> list[LogitsProcessor]:
    bad = [t for t in p.logit_bias if not 0 <= int(t) < vocab_size]
    if bad:
        raise EngineError(
            "invalid_request",
            f"logit_bias has token ids outside the vocabulary (0..{vocab_size - 1}): {bad[:5]}",
            "logit_bias",
        )
    processors: list[LogitsProcessor] = make_logits_processors(
        logit_bias={int(k): float(v) for k, v in p.logit_bias.items()} or None,
        repetition_penalty=p.repetition_penalty,
        repetition_context_size=p.penalty_context,
        presence_penalty=p.presence_penalty or None,
        presence_context_size=p.penalty_context,
        frequency_penalty=p.frequency_penalty or None,
        frequency_context_size=p.penalty_context,
    )
    return processors
