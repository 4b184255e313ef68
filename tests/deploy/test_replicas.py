"""Two `impetus serve` replicas behind the shipped nginx files: consistent hashing on the
X-Session-Id header keeps every turn of a conversation on one replica, whose prompt cache then
serves the earlier turns; plain round robin sends the next turn to the other replica, which has
nothing cached. Each replica names itself in the X-Impetus-Instance response header."""

from __future__ import annotations

import asyncio
import io
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from impetus.bench.serve import SESSION_HEADER, MultiTurnConfig, run_multiturn
from impetus.client import Endpoint, ImpetusClient
from impetus.client.terminal import ChatSession
from impetus.widgets import Chat
from tests.api.conftest import ADMIN_KEY, Server
from tests.deploy.nginx import DEPLOY, Nginx, free_port, render_upstream, rewrite

CONVERSATIONS = 16  # enough that both replicas get some, whatever ports the replicas got
TURNS = 3


@dataclass
class Turn:
    instance: str
    prompt_tokens: int
    cached_tokens: int


@pytest.fixture(scope="module")
def replicas(server_factory: Callable[..., Server], tiny_model_dir: Path) -> list[Server]:
    pair = [server_factory("--model", str(tiny_model_dir), ready=False) for _ in range(2)]
    for server in pair:  # both start at once
        server.wait_ready()
    return pair


def proxy(replicas: list[Server], prefix: Path, hashing: bool) -> tuple[Nginx, str]:
    """nginx with the shipped site and upstream (its hashing line removed unless `hashing`)."""
    nginx = Nginx(prefix)
    addresses = [r.base_url.split("/")[2] for r in replicas]
    nginx.conf("impetus-upstream.conf", render_upstream(addresses, hashing=hashing))
    port = free_port()
    site = (DEPLOY / "impetus.conf").read_text()
    site = rewrite(site, r"^\s*listen 80;$", f"    listen 127.0.0.1:{port};", 1)
    nginx.site("impetus", rewrite(site, r"^\s*listen \[::\]:80;\n", "", 1))
    nginx.start()
    url = f"http://127.0.0.1:{port}/"
    nginx.wait_http(url + "health")
    return nginx, url


@pytest.fixture(scope="module")
def hashed(replicas: list[Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nginx, url = proxy(replicas, tmp_path_factory.mktemp("nginx-hash"), hashing=True)
    yield url
    nginx.stop()


@pytest.fixture(scope="module")
def round_robin(replicas: list[Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nginx, url = proxy(replicas, tmp_path_factory.mktemp("nginx-rr"), hashing=False)
    yield url
    nginx.stop()


def instances(replicas: list[Server]) -> set[str]:
    """What each replica names itself by default: this host and its port."""
    return {f"{socket.gethostname()}:{r.base_url.split(':')[-1].rstrip('/')}" for r in replicas}


def converse(url: str, session: str, model: str) -> list[Turn]:
    """One conversation of TURNS turns through the proxy, each sent with its session header."""
    client = openai.OpenAI(base_url=url + "v1", api_key=ADMIN_KEY, max_retries=0)
    messages: list[dict[str, str]] = [
        {"role": "user", "content": f"Conversation {session}: tell me about prompt caches."}
    ]
    turns = []
    for n in range(TURNS):
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=4,
            temperature=0,
            extra_headers={SESSION_HEADER: session},
        )
        reply = raw.parse()
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        turns.append(
            Turn(
                instance=raw.headers["X-Impetus-Instance"],
                prompt_tokens=reply.usage.prompt_tokens,
                cached_tokens=reply.usage.prompt_tokens_details.cached_tokens or 0,
            )
        )
        messages += [
            {"role": "assistant", "content": reply.choices[0].message.content or ""},
            {"role": "user", "content": f"And after turn {n}?"},
        ]
    return turns


def cached_fraction(conversations: list[list[Turn]]) -> float:
    """Prompt tokens of the later turns served from a cache, over all their prompt tokens."""
    later = [t for c in conversations for t in c[1:]]
    return sum(t.cached_tokens for t in later) / sum(t.prompt_tokens for t in later)


def test_hashing_keeps_each_conversation_on_the_replica_with_its_cache(
    replicas: list[Server], hashed: str, round_robin: str, tiny_model_dir: Path
) -> None:
    names = instances(replicas)
    model = str(tiny_model_dir)
    kept = [converse(hashed, f"hash-{i}", model) for i in range(CONVERSATIONS)]
    for turns in kept:
        assert len({t.instance for t in turns}) == 1, turns  # every turn on one replica
        for before, after in zip(turns, turns[1:], strict=False):
            # the previous turn's whole prompt came from the cache
            assert after.cached_tokens >= before.prompt_tokens, turns
    assert {c[0].instance for c in kept} == names  # and the conversations use both replicas

    # Round robin (the hashing line removed): with two replicas and one request at a time,
    # the next turn always goes to the other replica, which has no copy of the conversation.
    spread = [converse(round_robin, f"rr-{i}", model) for i in range(CONVERSATIONS)]
    for turns in spread:
        assert turns[0].instance != turns[1].instance
        assert turns[1].cached_tokens < turns[0].prompt_tokens, turns
    assert cached_fraction(spread) < cached_fraction(kept)


def test_requests_without_the_header_are_spread(
    replicas: list[Server], hashed: str, tiny_model_dir: Path
) -> None:
    """No session header: an empty hash key, which nginx balances round robin."""
    client = openai.OpenAI(base_url=hashed + "v1", api_key=ADMIN_KEY, max_retries=0)
    seen = set()
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model=str(tiny_model_dir),
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=2,
        )
        seen.add(raw.headers["X-Impetus-Instance"])
    assert seen == instances(replicas)


def test_bench_multiturn_sends_each_conversation_in_its_header(
    hashed: str, tiny_model_dir: Path
) -> None:
    """`impetus bench multiturn` through the proxy: every warm turn finds its conversation
    cached, because each conversation carries its own X-Session-Id."""
    config = MultiTurnConfig(
        base_url=hashed + "v1",
        model=str(tiny_model_dir),
        api_key=ADMIN_KEY,
        tokenizer=str(tiny_model_dir),
        conversations=8,
        turns=2,
        concurrency=2,
        first_prompt_tokens=48,
        turn_prompt_tokens=8,
        max_tokens=4,
        cold=False,
        warmup=0,
    )
    assert config.session_header == SESSION_HEADER
    record = asyncio.run(run_multiturn(config))
    (results,) = record.results
    assert len(results) == 16 and all(r.success for r in results)
    assert all((r.cached_tokens or 0) >= 48 for r in results if r.turn == 1)


def test_impetus_chat_clients_keep_their_conversation_on_one_replica(
    hashed: str, tiny_model_dir: Path
) -> None:
    """`impetus chat` (terminal), the Chat widget and the client library send their
    conversation's id: behind the hashing proxy, the second turn finds the first cached."""
    endpoint = Endpoint(hashed, ADMIN_KEY)
    model = str(tiny_model_dir)
    out = io.StringIO()
    terminal = ChatSession(
        ImpetusClient(endpoint=endpoint), model, params={"max_tokens": 4}, out=out
    )
    terminal.ask("Tell me about prompt caches.")
    terminal.ask("And replicas?")
    # each answer's stats line: "prompt N tokens (M cached)"
    (p1, _), (_, c2) = re.findall(r"prompt (\d+) tokens \((\d+) cached\)", out.getvalue())
    assert int(c2) >= int(p1), out.getvalue()

    chat = Chat(model=model, client=endpoint, temperature=0.0, max_tokens=4)
    try:
        chat.ask("What is a replica?", timeout=60)
        chat.ask("And a rank?", timeout=60)
        one, two = chat.history[1]["stats"], chat.history[3]["stats"]
        assert two["cached_tokens"] >= one["prompt_tokens"], two
    finally:
        chat.close()
