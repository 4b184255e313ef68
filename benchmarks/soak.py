"""Soak: mixed load against a real `impetus serve` for N minutes, memory watched over time.

    python benchmarks/soak.py --minutes 30 --out soak.json          # what docs/reliability.md records
    python benchmarks/soak.py --minutes 2 --clients 8 --sample-every 3  # the CI form (tests/reliability)

It starts `impetus serve` itself (its own IMPETUS_HOME, a tiny random Llama unless --model names
a folder, a second copy of it that is loaded and unloaded over and over, and the embedded MiniLM
embedding model) and runs `--clients` concurrent clients, each picking its next request at random:
chat (multi-turn, so the prompt cache is used), streaming chat, completions, embeddings, a stream
cancelled after a few chunks, a request whose client disconnects before the answer, and admin
load / unload of the second model (whose own requests may then fail with `model_unloaded`: an
expected outcome). Every few seconds it samples the engine's RSS, MLX active memory and
prompt-cache bytes (admin/status) and the RSS of the serve process.

It reports requests served, failures by reason, memory over time with the slope (least squares,
after a warm-up) and the checks the CI test asserts: no unexpected failure, prompt-cache bytes
never above the bound, nothing left running or open at the end, and memory slopes below a limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KEY = "soak-admin-key-0123456789"
MiB = 1 << 20
# outcomes that are the point of the action, not failures
EXPECTED = {"cancelled_by_client", "disconnected_by_client", "model_unloaded"}
TOPICS = ["the sea", "a fox", "Paris", "numbers", "JSON", "a robot", "the moon", "bread"]


@dataclass
class Sample:
    t: float  # seconds since the load began
    engine_rss: int
    mlx_active: int
    prompt_cache_bytes: int
    serve_rss: int
    running: int
    waiting: int
    in_flight: int


@dataclass
class Result:
    minutes: float
    clients: int
    prompt_cache_bound: int
    started: str
    actions: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)  # "ok", expected reasons, failures
    failures: dict[str, int] = field(default_factory=dict)  # unexpected only, by reason
    failure_examples: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    slopes_mib_per_min: dict[str, float] = field(default_factory=dict)
    max_prompt_cache_bytes: int = 0
    end_state: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def served(self) -> int:
        return sum(self.outcomes.values())


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t seconds, bytes) in MiB per minute."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mt) * (y - my) for t, y in points)
    return cov / var * 60 / MiB


class Serve:
    """One `impetus serve` child on a free loopback port."""

    def __init__(self, home: Path, args: list[str]) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.log = home / "serve.log"
        cmd = [sys.executable, "-m", "impetus.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--home", str(home), "--api-key", KEY, "--allow-model-paths", *args]
        env = {k: v for k, v in os.environ.items() if k != "IMPETUS_API_KEY"}
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on " not in line:
            self.proc.wait(30)
            raise RuntimeError(f"impetus serve did not start: {line}\n{self.log.read_text()}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.headers = {"Authorization": f"Bearer {KEY}"}

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"impetus serve exited:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(self.url + "ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"not ready after {timeout} s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Load:
    def __init__(self, serve: Serve, model: str, spare: str, result: Result) -> None:
        self.serve = serve
        self.model = model
        self.spare = spare  # loaded and unloaded by the admin action
        self.r = result
        self.rng = random.Random(1234)
        self.stop_at = 0.0
        self.t0 = 0.0
        self.spare_loaded = False
        self.admin_lock = asyncio.Lock()

    # ---- bookkeeping

    def outcome(self, action: str, what: str, detail: str = "") -> None:
        self.r.outcomes[what] = self.r.outcomes.get(what, 0) + 1
        if what != "ok" and what not in EXPECTED:
            self.r.failures[what] = self.r.failures.get(what, 0) + 1
            if len(self.r.failure_examples) < 20:
                self.r.failure_examples.append(f"{action}: {what}: {detail[:300]}")

    def classify(self, resp: httpx.Response) -> str:
        if resp.status_code < 400:
            return "ok"
        try:
            code = resp.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "not_openai_shape"
        return code if code == "model_unloaded" else f"http_{resp.status_code}_{code}"

    # ---- actions

    def conversation(self) -> list[dict[str, str]]:
        topic = self.rng.choice(TOPICS)
        turns = self.rng.randint(1, 3)
        msgs = [{"role": "system", "content": "You are a terse assistant."}]
        for i in range(turns):
            msgs.append({"role": "user", "content": f"Tell me about {topic}, part {i}."})
            if i < turns - 1:
                msgs.append({"role": "assistant", "content": f"{topic} is interesting ({i})."})
        return msgs

    async def chat(self, c: httpx.AsyncClient, model: str | None = None) -> str:
        body = {"model": model or self.model, "messages": self.conversation(), "max_tokens": 24}
        return self.classify(await c.post("v1/chat/completions", json=body))

    async def stream(self, c: httpx.AsyncClient, cancel_after: int | None = None) -> str:
        body = {
            "model": self.model,
            "messages": self.conversation(),
            "max_tokens": 32,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with c.stream("POST", "v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                return self.classify(resp)
            events = 0
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    return "ok"
                if '"error"' in data and json.loads(data).get("error"):
                    return f"stream_error_{json.loads(data)['error'].get('code')}"
                events += 1
                if cancel_after is not None and events >= cancel_after:
                    return "cancelled_by_client"  # leaving the block closes the connection
            return "stream_ended_without_done"

    async def completion(self, c: httpx.AsyncClient) -> str:
        body = {
            "model": self.model,
            "prompt": f"Once upon {self.rng.choice(TOPICS)}",
            "max_tokens": 16,
        }
        return self.classify(await c.post("v1/completions", json=body))

    async def embeddings(self, c: httpx.AsyncClient) -> str:
        texts = [f"{self.rng.choice(TOPICS)} {i}" for i in range(self.rng.randint(1, 8))]
        return self.classify(
            await c.post("v1/embeddings", json={"model": "minilm", "input": texts})
        )

    async def disconnect(self, c: httpx.AsyncClient) -> str:
        body = {"model": self.model, "messages": self.conversation(), "max_tokens": 200}
        try:
            resp = await c.post(
                "v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.05)
            )
        except httpx.ReadTimeout:
            return "disconnected_by_client"
        return self.classify(resp)

    async def admin(self, c: httpx.AsyncClient) -> str:
        async with self.admin_lock:
            if self.spare_loaded:
                resp = await c.post("admin/models/unload", json={"id": self.spare})
                self.spare_loaded = False
            else:
                resp = await c.post("admin/models/load", json={"id": self.spare})
                self.spare_loaded = resp.status_code == 200
        return self.classify(resp)

    async def spare_chat(self, c: httpx.AsyncClient) -> str:
        # a request to the model the admin action loads and unloads: it may be unloaded under it
        # (503 model_unloaded, expected), or be loaded just in time
        return await self.chat(c, self.spare)

    ACTIONS = {
        "chat": 22,
        "stream": 22,
        "completion": 12,
        "embeddings": 10,
        "cancel": 10,
        "disconnect": 10,
        "admin": 4,
        "spare_chat": 4,
    }

    async def client(self, i: int) -> None:
        names = list(self.ACTIONS)
        weights = list(self.ACTIONS.values())
        async with httpx.AsyncClient(
            base_url=self.serve.url, headers=self.serve.headers, timeout=120
        ) as c:
            while time.monotonic() < self.stop_at:
                action = self.rng.choices(names, weights)[0]
                self.r.actions[action] = self.r.actions.get(action, 0) + 1
                try:
                    if action == "stream":
                        what = await self.stream(c)
                    elif action == "cancel":
                        what = await self.stream(c, cancel_after=self.rng.randint(1, 4))
                    else:
                        what = await getattr(self, action)(c)
                except httpx.HTTPError as e:
                    what = f"transport_{type(e).__name__}"
                    self.outcome(action, what, str(e))
                    continue
                self.outcome(action, what)

    async def sampler(self, every: float) -> None:
        serve_ps = psutil.Process(self.serve.proc.pid)
        async with httpx.AsyncClient(
            base_url=self.serve.url, headers=self.serve.headers, timeout=30
        ) as c:
            while time.monotonic() < self.stop_at + every:
                try:
                    st = (await c.get("admin/status")).json()
                    self.r.samples.append(
                        Sample(
                            t=round(time.monotonic() - self.t0, 2),
                            engine_rss=int(st.get("process_rss", 0)),
                            mlx_active=int(st.get("memory_used", 0)),
                            prompt_cache_bytes=int(st["stats"]["prompt_cache_bytes"]),
                            serve_rss=serve_ps.memory_info().rss,
                            running=int(st["stats"]["running"]),
                            waiting=int(st["stats"]["waiting"]),
                            in_flight=int(st.get("in_flight", 0)),
                        )
                    )
                except (httpx.HTTPError, KeyError, ValueError) as e:
                    self.outcome("sample", f"status_unavailable_{type(e).__name__}", str(e))
                await asyncio.sleep(every)

    async def run(self, seconds: float, clients: int, every: float) -> None:
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + seconds
        await asyncio.gather(self.sampler(every), *(self.client(i) for i in range(clients)))


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.split("{")[0].split(" ")[0] == name:
            total += float(line.rsplit(" ", 1)[1])
    return total


def end_state(serve: Serve) -> dict[str, Any]:
    """Once the load is over: nothing may still run, wait or hold a handler."""
    deadline = time.monotonic() + 15
    while True:
        st = httpx.get(serve.url + "admin/status", headers=serve.headers, timeout=30).json()
        text = httpx.get(serve.url + "metrics", headers=serve.headers, timeout=30).text
        state = {
            "running": st["stats"]["running"],
            "waiting": st["stats"]["waiting"],
            "in_flight": st["in_flight"],
            # the /metrics request that reads it is itself one open handler
            "open_handlers": metric(text, "impetus:http_handlers_open") - 1,
            "open_generations": metric(text, "impetus:engine_open_generations"),
            "prompt_cache_bytes": st["stats"]["prompt_cache_bytes"],
            "restarts": st["restarts"],
        }
        idle = not any(
            state[k]
            for k in ("running", "waiting", "in_flight", "open_handlers", "open_generations")
        )
        if idle or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def check(r: Result, max_slope: float, warmup: float) -> list[str]:
    problems = []
    if r.failures:
        problems.append(f"unexpected failures: {r.failures} (e.g. {r.failure_examples[:3]})")
    if r.outcomes.get("ok", 0) == 0:
        problems.append("no request succeeded")
    if r.max_prompt_cache_bytes > r.prompt_cache_bound:
        problems.append(
            f"prompt cache reached {r.max_prompt_cache_bytes} bytes, above its bound {r.prompt_cache_bound}"
        )
    for k in ("running", "waiting", "in_flight", "open_handlers", "open_generations", "restarts"):
        if r.end_state.get(k):
            problems.append(f"after the load: {k} = {r.end_state[k]}")
    late = [s for s in r.samples if s.t >= warmup]
    if len(late) < 3:
        problems.append(f"too few memory samples after the warm-up: {len(late)}")
    for name, value in r.slopes_mib_per_min.items():
        if value > max_slope:
            problems.append(
                f"{name} grows {value:.1f} MiB/min after the warm-up (limit {max_slope})"
            )
    return problems


def run(
    minutes: float,
    clients: int = 8,
    *,
    model: str | None = None,
    prompt_cache_bytes: int = 4 * MiB,
    sample_every: float = 5.0,
    max_slope: float = 32.0,
    warmup_fraction: float = 0.3,
    home: Path | None = None,
) -> Result:
    """Start a server, load it for `minutes`, stop it; the result carries its own checks."""
    from tests.tiny_model import build_tiny_llama

    tmp = Path(tempfile.mkdtemp(prefix="impetus-soak-"))
    try:
        if model is None:
            model = str(build_tiny_llama(tmp / "tiny-llama", context=2048, hidden=64))
        spare = tmp / "spare-model"
        shutil.copytree(model, spare)
        serve = Serve(
            home or tmp / "home",
            [
                "--model", model, "--model", "minilm",
                "--prompt-cache-bytes", str(prompt_cache_bytes),
                "--max-tokens-default", "64",
                "--max-queue", str(max(64, clients * 4)),
            ],
        )  # fmt: skip
        result = Result(
            minutes=minutes,
            clients=clients,
            prompt_cache_bound=prompt_cache_bytes,
            started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        try:
            serve.wait_ready()
            load = Load(serve, model, str(spare), result)
            asyncio.run(load.run(minutes * 60, clients, sample_every))
            result.end_state = end_state(serve)
        finally:
            serve.stop()
        warmup = minutes * 60 * warmup_fraction
        late = [s for s in result.samples if s.t >= warmup]
        for name in ("engine_rss", "mlx_active", "serve_rss"):
            result.slopes_mib_per_min[name] = round(
                slope([(s.t, getattr(s, name)) for s in late]), 3
            )
        result.max_prompt_cache_bytes = max(
            (s.prompt_cache_bytes for s in result.samples), default=0
        )
        result.problems = check(result, max_slope, warmup)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summary(r: Result) -> str:
    lines = [
        f"soak: {r.minutes:g} min, {r.clients} clients, started {r.started}",
        f"requests: {r.served} ({', '.join(f'{k} {v}' for k, v in sorted(r.actions.items()))})",
        f"outcomes: {dict(Counter(r.outcomes).most_common())}",
        f"unexpected failures: {r.failures or 'none'}",
        f"prompt cache: max {r.max_prompt_cache_bytes / MiB:.2f} MiB of {r.prompt_cache_bound / MiB:.2f} MiB",
        "memory slope after warm-up (MiB/min): "
        + ", ".join(f"{k} {v:+.2f}" for k, v in r.slopes_mib_per_min.items()),
    ]
    if r.samples:
        first, last = r.samples[0], r.samples[-1]
        for name in ("engine_rss", "mlx_active", "serve_rss"):
            lines.append(
                f"  {name}: {getattr(first, name) / MiB:.1f} -> {getattr(last, name) / MiB:.1f} MiB "
                f"(max {max(getattr(s, name) for s in r.samples) / MiB:.1f})"
            )
    lines.append(f"end state: {r.end_state}")
    lines.append("checks: " + ("all passed" if not r.problems else "; ".join(r.problems)))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--model", help="a chat model folder (default: a tiny random Llama)")
    p.add_argument("--prompt-cache-bytes", type=int, default=4 * MiB)
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument(
        "--max-slope", type=float, default=32.0, help="MiB/min allowed after the warm-up"
    )
    p.add_argument("--out", type=Path, help="write the full result (samples included) as JSON")
    a = p.parse_args()
    r = run(
        a.minutes,
        a.clients,
        model=a.model,
        prompt_cache_bytes=a.prompt_cache_bytes,
        sample_every=a.sample_every,
        max_slope=a.max_slope,
    )
    print(summary(r))
    if a.out:
        a.out.write_text(json.dumps(asdict(r), indent=1))
    return 1 if r.problems else 0


if __name__ == "__main__":
    sys.exit(main())
