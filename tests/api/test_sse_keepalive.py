"""SSE keepalive comments: while a streamed request waits for its first token (in the batch
queue, or prefilling a long prompt) the server sends `: keepalive` comments, so that a reverse
proxy with an idle timeout does not cut the connection; once tokens flow, none."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.api.conftest import Server


def test_a_long_prefill_gets_keepalives_until_the_first_token(
    server_factory: Callable[..., Server], slow_model_dir: Path
) -> None:
    model = str(slow_model_dir)
    # A long prompt prefilled 16 tokens per engine step: seconds before the first token.
    srv = server_factory(
        "--model", model, "--prefill-step", "16", "--sse-keepalive", "0.2",
        "--prompt-cache-bytes", "0",
    )  # fmt: skip
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "tell me more " * 250}],
        "max_tokens": 5,
        "ignore_eos": True,
        "stream": True,
    }
    lines: list[tuple[float, str]] = []
    with httpx.stream(
        "POST", srv.url("v1/chat/completions"), headers=srv.headers(), json=body, timeout=120
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line:
                lines.append((time.monotonic(), line))
    texts = [t for _, t in lines]
    t0 = lines[0][0]
    timeline = [(round(t - t0, 2), x[:50]) for t, x in lines]
    first_content = next(i for i, t in enumerate(texts) if '"content":"' in t and '"role"' not in t)
    keepalives = [i for i, t in enumerate(texts) if t == ": keepalive"]
    assert keepalives, timeline
    # only before the first token; otherwise a normal stream
    assert max(keepalives) < first_content, timeline
    assert texts[-1] == "data: [DONE]"
    assert all(t.startswith("data: ") or t == ": keepalive" for t in texts)
    # about one per interval while waiting (not a flood, not one at the end)
    wait = lines[first_content][0] - t0
    assert len(keepalives) <= wait / 0.2 + 2, timeline

    # Anthropic's and the Responses streams get them too, between their first events and the
    # first token (the prompt cache is off: each prefill is as long as the first)
    for path, extra in (
        ("v1/messages", {"max_tokens": 5}),
        ("v1/responses", {"input": body["messages"], "max_output_tokens": 5}),
    ):
        request = {"model": model, "stream": True, **extra}
        if path == "v1/messages":
            request["messages"] = body["messages"]
        with httpx.stream(
            "POST", srv.url(path), headers=srv.headers(), json=request, timeout=120
        ) as r:
            assert r.status_code == 200, r.read()
            seen = [line for line in r.iter_lines() if line]
        assert ": keepalive" in seen, (path, seen[:8])
        first_delta = next(i for i, t in enumerate(seen) if "delta" in t and t.startswith("data:"))
        assert seen.index(": keepalive") < first_delta
