"""One model across two engine ranks (`impetus serve --ranks 2`: mlx.launch, ring backend on
loopback, tensor parallel) against one rank, through a real server and the OpenAI SDK.

The tiny model has 4 attention heads and 2 key-value heads, so it splits over two ranks. Greedy
text is compared between the two servers; the ranks' agreement on sampled tokens is checked by
the engine itself (a rank whose tokens differ stops the group, which would show as a restart).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from impetus.engine.autoranks import installed_backend
from impetus.engine.distributed import free_port_run
from tests.api.conftest import Server, serve_command
from tests.tiny_model import build_tiny_gpt2

PROMPTS = ["Hello", "What is the capital of France?", "Numbers: 0 1 2", "def main():"]


@pytest.fixture(scope="module")
def two(server_factory: Callable[..., Server], tiny_model_dir: Path) -> Server:
    return server_factory("--model", str(tiny_model_dir), "--ranks", "2")


@pytest.fixture(scope="module")
def one(server_factory: Callable[..., Server], tiny_model_dir: Path) -> Server:
    return server_factory("--model", str(tiny_model_dir))


def greedy(srv: Server, model: str, prompt: str, max_tokens: int = 12) -> tuple[str, int]:
    r = srv.openai().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert r.usage is not None and r.usage.completion_tokens == max_tokens
    return r.choices[0].message.content or "", r.usage.completion_tokens


def restarts(srv: Server) -> int:
    return int(srv.get("admin/status").json()["restarts"])


def test_ranks_under_an_outside_launcher_are_refused(tmp_path: Path) -> None:
    env = dict(os.environ, MLX_RANK="0")
    r = subprocess.run(
        serve_command("--ranks", "2", "--no-auth", "--home", str(tmp_path)),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "ranks=2 cannot be used under an MLX launcher (MLX_RANK is set)" in r.stderr


def test_the_group_is_reported(two: Server, model: str) -> None:
    st = two.get("admin/status").json()
    assert st["ranks"]["size"] == 2 and st["ranks"]["backend"] == "ring"
    assert st["ranks"]["launcher"] == "impetus" and st["pid"] == st["ranks"]["pids"][0]
    assert len(set(st["ranks"]["pids"])) == 2
    ready = two.get("ready", key=None).json()
    assert ready["ranks"] == 2 and ready["distributed_backend"] == "ring"
    cards = {m.id: m for m in two.openai().models.list().data}
    assert cards[model].model_extra["ranks"] == 2  # type: ignore[index]


def test_the_default_is_auto_and_says_what_it_chose(one: Server) -> None:
    """`one` is started without --ranks: `auto`, one engine process here, and the log says why."""
    log = one.log.read_text(errors="replace")
    if installed_backend() == "cuda":
        assert "ranks auto: " in log
    else:
        assert "ranks auto: 1 (cpu backend: auto shards over CUDA GPUs only)" in log
        assert one.get("admin/status").json()["ranks"] is None  # a single engine process


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_an_idle_group_does_not_spin(two: Server) -> None:
    """A follower waits for rank 0's turns inside a collective, where the ring backend polls
    its sockets: without the idle pacing (engine/process.py) each idle follower used a whole
    core, which an idle server must not."""
    pids = two.get("admin/status").json()["ranks"]["pids"]
    before = [cpu_seconds(p) for p in pids]
    time.sleep(4.0)
    used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    assert max(used) < 1.0, f"CPU seconds used by each idle rank in 4 s: {used}"


def test_same_greedy_text_as_one_rank(one: Server, two: Server, model: str) -> None:
    for prompt in PROMPTS[:2]:
        assert greedy(two, model, prompt) == greedy(one, model, prompt)


def test_concurrent_requests_batch_like_one_rank(one: Server, two: Server, model: str) -> None:
    solo = [greedy(one, model, p) for p in PROMPTS]
    got: dict[int, tuple[str, int]] = {}

    def run(i: int) -> None:
        got[i] = greedy(two, model, PROMPTS[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(PROMPTS))] == solo
    # sampled requests beside them: the ranks must draw the same tokens (else the group stops)
    for seed in (None, 7):
        r = two.openai().chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=8,
            temperature=1.0,
            seed=seed,
            n=2,
        )
        assert len(r.choices) == 2
    assert restarts(two) == 0


def test_prompt_cache_reuse_across_ranks(one: Server, two: Server, model: str) -> None:
    def turns(srv: Server) -> tuple[list[str], int]:
        messages: list[dict[str, str]] = [{"role": "user", "content": "The quick brown fox"}]
        texts = []
        cached = 0
        for follow_up in ("jumps over", "the lazy dog"):
            r = srv.openai().chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=6,
                temperature=0,  # type: ignore[arg-type]
            )
            text = r.choices[0].message.content or ""
            texts.append(text)
            assert r.usage is not None and r.usage.prompt_tokens_details is not None
            cached = r.usage.prompt_tokens_details.cached_tokens or 0
            messages += [
                {"role": "assistant", "content": text},
                {"role": "user", "content": follow_up},
            ]
        return texts, cached

    texts, cached = turns(two)
    assert cached > 0  # the second turn prefilled only its new tokens, on both ranks
    assert (texts, cached) == turns(one)


def long_stream(server: Server, model: str) -> Any:
    """A streamed chat that runs 400 tokens unless stopped (ignore_eos)."""
    return server.openai().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=400,
        stream=True,
        extra_body={"ignore_eos": True},
    )


def test_cancel_frees_the_slot_on_every_rank(two: Server, model: str) -> None:
    stream = long_stream(two, model)
    next(iter(stream))
    stream.close()  # the client goes away: the api cancels the generation
    deadline = time.monotonic() + 30
    while two.get("admin/status").json()["stats"]["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert two.get("admin/status").json()["stats"]["running"] == 0
    # the followers removed it too: the next steps still line up
    assert greedy(two, model, "Hello", 4)[1] == 4
    assert restarts(two) == 0


def test_a_model_mlx_lm_cannot_shard_is_refused_naming_its_architecture(
    two: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gpt2 = build_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")
    with pytest.raises(openai.InternalServerError) as refused:
        two.openai().chat.completions.create(
            model=str(gpt2), messages=[{"role": "user", "content": "Hello"}], max_tokens=2
        )
    assert refused.value.code == "model_load_failed"
    assert "no tensor parallelism for the gpt2 architecture" in refused.value.message
    assert "2 ranks" in refused.value.message
    r = two.post("admin/models/load", {"id": str(gpt2)})  # the admin path says the same
    assert r.status_code == 500 and "gpt2" in r.json()["error"]["message"]
    assert restarts(two) == 0


@pytest.mark.slow
def test_heads_that_do_not_divide_over_the_ranks_are_refused(two: Server) -> None:
    """The embedded SmolLM2-135M has 9 attention heads and 3 key-value heads: not for 2 ranks
    (mlx-lm's shard would split them unevenly without a word); 3 ranks serve it
    (test_ranks_default_model.py)."""
    with pytest.raises(openai.InternalServerError) as refused:
        two.openai().chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "Hello"}], max_tokens=2
        )
    assert refused.value.code == "model_load_failed"
    message = refused.value.message
    assert "(llama) has 9 attention heads" in message and "2 ranks" in message
    assert restarts(two) == 0


def test_under_mlx_launch_rank_0_serves_and_the_other_follows(
    one: Server, model: str, tmp_path: Path
) -> None:
    """`mlx.launch ... impetus serve ...`, as across machines (here one host twice): rank 0's
    serve answers HTTP, rank 1's becomes a follower engine."""
    launch = [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()"]
    ring_port = free_port_run(2)
    cmd = [
        *launch, "--backend", "ring", "-n", "2", "--starting-port", str(ring_port), "--",
        *serve_command(
            "--host", "127.0.0.1", "--port", "0", "--no-auth", "--home", str(tmp_path),
            "--allow-model-paths", "--model", model,
        ),
    ]  # fmt: skip
    log = tmp_path / "launch.log"
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        line = ""
        while "listening on " not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, log.read_text()
        srv = Server(proc, line.split("listening on ", 1)[1].split()[0], log, None)
        srv.wait_ready(timeout=180)
        st = srv.get("admin/status").json()
        assert st["ranks"]["size"] == 2 and st["ranks"]["launcher"] == "external"
        assert greedy(srv, model, PROMPTS[1]) == greedy(one, model, PROMPTS[1])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # mlx.launch, both impetus serve, the engines
        proc.wait(60)


def test_keep_alive_unloads_on_every_rank(
    server_factory: Callable[..., Server], model: str
) -> None:
    """Rank 0's clock decides that a model idled past its keep-alive; every rank unloads it in
    the same turn, and the next request loads it on all of them again."""
    srv = server_factory("--ranks", "2", "--keep-alive", "1", ready=False)
    srv.wait_ready_or_engine(timeout=180)
    first = greedy(srv, model, "Hello", 4)
    deadline = time.monotonic() + 30
    while srv.get("admin/status").json()["models"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert srv.get("admin/status").json()["models"] == []
    assert greedy(srv, model, "Hello", 4) == first  # loaded again on both ranks, in step
    assert restarts(srv) == 0


@pytest.mark.slow
def test_embeddings_beside_a_sharded_model(one: Server, two: Server) -> None:
    """Embedding models are whole on rank 0 (only it answers); the followers load them too, so
    that every rank's memory and eviction stay the same, without computing the vectors."""
    texts = ["The quick brown fox", "Paris is the capital of France"]
    got = two.openai().embeddings.create(model="minilm", input=texts)
    want = one.openai().embeddings.create(model="minilm", input=texts)
    for a, b in zip(got.data, want.data, strict=True):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding, strict=True)) < 1e-5
    assert got.usage.prompt_tokens == want.usage.prompt_tokens
    assert restarts(two) == 0


def test_a_killed_follower_rank_is_recovered(one: Server, two: Server, model: str) -> None:
    before = two.get("admin/status").json()
    follower = before["ranks"]["pids"][1]
    stream = long_stream(two, model)
    chunks: Iterator[object] = iter(stream)
    next(chunks)
    os.kill(follower, signal.SIGKILL)
    with pytest.raises(openai.APIError) as failed:
        for _ in chunks:
            pass
    assert "rank 1 of the engine group (2 ranks) exited with code -9" in failed.value.message
    two.wait_ready(timeout=180)
    after = two.get("admin/status").json()
    assert after["restarts"] == before["restarts"] + 1
    assert after["ranks"]["size"] == 2 and follower not in after["ranks"]["pids"]
    assert greedy(two, model, PROMPTS[0]) == greedy(one, model, PROMPTS[0])
