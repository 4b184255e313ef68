"""The benchmark report sized to the machine: a profile, its plan, a time estimate, progress.

A small CPU gets the `quick` profile (the full one ran for over 25 minutes on two cores); a GPU,
an Apple chip or a large CPU get `full`. Before anything runs the plan is printed (profiles,
requests and tokens per endpoint) with an estimate; each load profile prints a line as it ends.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

# The report notebook's parameters that a profile sets; others keep the notebook's defaults.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "concurrency": [1, 4],
        "requests": 8,
        "prompt_tokens": 128,
        "max_tokens": 32,
        "prompt_lengths": [128, 512],
        "multiturn_turns": 3,
        "multiturn_conversations": 1,
        "multiturn_first_tokens": 256,
        "trials": 2,
        "engine_prompt_tokens": 256,
        "engine_generation_tokens": 32,
    },
    "full": {
        "concurrency": [1, 2, 4, 8],
        "requests": 32,
        "prompt_tokens": 256,
        "max_tokens": 128,
        "prompt_lengths": [128, 512, 1024],
        "multiturn_turns": 4,
        "multiturn_conversations": 2,
        "multiturn_first_tokens": 512,
        "trials": 3,
        "engine_prompt_tokens": 512,
        "engine_generation_tokens": 128,
    },
}

# Single-stream rates (tokens/s) used for the estimate when no stored run of this model says
# better: measured on a 2-core Linux CPU with SmolLM2-135M (docs/benchmarks.md); the 4-bit
# folder as stored is what mlx_lm.server serves there. Fast machines finish well within them.
CPU_RATES = {"impetus": (400.0, 12.0), "mlx_lm": (15.0, 7.0)}  # (prompt, decode)
FAST_RATES = {"impetus": (4000.0, 100.0), "mlx_lm": (4000.0, 100.0)}


@dataclass
class Machine:
    backend: str  # cpu | cuda | metal
    cores: int

    @property
    def small(self) -> bool:
        return self.backend == "cpu" and self.cores < 16

    def describe(self) -> str:
        return f"{self.backend} backend, {self.cores} cores"


def this_machine() -> Machine:
    from impetus.models.backend import detect_backend

    return Machine(backend=detect_backend(), cores=os.cpu_count() or 1)


def choose_profile(requested: str, machine: Machine) -> tuple[str, str]:
    """(profile, why) for `--profile auto|quick|full`."""
    if requested in PROFILES:
        return requested, "asked for"
    if requested != "auto":
        raise ValueError(f"unknown profile {requested!r}: auto, {', '.join(PROFILES)}")
    if machine.small:
        return "quick", f"{machine.describe()}: a small CPU"
    return "full", machine.describe()


@dataclass
class Step:
    what: str
    endpoint: str
    requests: int
    prompt_tokens: int
    max_tokens: int
    concurrency: int = 1

    def seconds(self, rates: tuple[float, float]) -> float:
        prefill, decode = rates
        per_request = self.prompt_tokens / prefill + self.max_tokens / decode
        # concurrent requests share the machine: count them as overlapping only partly
        waves = self.requests / max(1, self.concurrency) ** 0.5
        return waves * per_request


def plan(params: dict[str, Any]) -> list[Step]:
    endpoints = [str(e).split("=")[0] for e in params["endpoints"]]
    steps: list[Step] = []
    for ep in endpoints:
        for c in params["concurrency"]:
            steps.append(
                Step(
                    f"concurrency {c}",
                    ep,
                    params["requests"],
                    params["prompt_tokens"],
                    params["max_tokens"],
                    c,
                )  # fmt: skip
            )
        for n in params["prompt_lengths"]:
            steps.append(
                Step(
                    f"prompt {n}",
                    ep,
                    max(4, params["requests"] // 4),
                    n,
                    min(params["max_tokens"], 16),
                )  # fmt: skip
            )
        turns, convs = params["multiturn_turns"], params["multiturn_conversations"]
        if turns > 0:
            first = params["multiturn_first_tokens"]
            steps.append(
                Step(
                    f"multi-turn {convs}x{turns}",
                    ep,
                    2 * turns * convs,
                    first + 64 * turns // 2,
                    min(params["max_tokens"], 64),
                )  # fmt: skip
            )
    if params["trials"] > 0:
        for side in ("impetus", "mlx_lm"):  # engine vs raw mlx_lm, one warm-up each
            steps.append(
                Step(
                    "engine bench",
                    side,
                    params["trials"] + 1,
                    params["engine_prompt_tokens"],
                    params["engine_generation_tokens"],
                )  # fmt: skip
            )
    return steps


def estimate(steps: list[Step], machine: Machine) -> float:
    rates = CPU_RATES if machine.small else FAST_RATES
    return sum(s.seconds(rates.get(s.endpoint, rates["impetus"])) for s in steps)


def format_plan(profile: str, why: str, params: dict[str, Any], machine: Machine) -> str:
    steps = plan(params)
    total = estimate(steps, machine)
    lines = [f"benchmark report: profile {profile} ({why})"]
    for ep in dict.fromkeys(s.endpoint for s in steps):
        mine = [s for s in steps if s.endpoint == ep]
        reqs = sum(s.requests for s in mine)
        toks = sum(s.requests * s.max_tokens for s in mine)
        lines.append(
            f"  {ep}: {len(mine)} profiles, {reqs} requests, {toks} generated tokens: "
            + ", ".join(s.what for s in mine)
        )
    lines.append(
        f"  estimate: about {_minutes(total)} (from single-stream rates typical of this class of "
        "machine; each profile prints a line as it ends)"
    )
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class ProfileLog:
    """`on_profile` callback printing one line per finished load profile, with elapsed time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.t0 = time.monotonic()

    def __call__(self, summary: Any) -> None:
        spec = summary.spec
        tps = summary.output_throughput
        print(
            f"[{self.name}] {spec.name}: {summary.completed}/{summary.requests} requests"
            + (f", {tps:.1f} tok/s" if tps else "")
            + (f", {summary.failed} failed" if summary.failed else "")
            + f" · {time.monotonic() - self.t0:.0f} s",
            flush=True,
            file=sys.stdout,
        )
