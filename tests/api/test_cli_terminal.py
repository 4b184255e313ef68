"""The Ollama-like command line against a real `impetus serve`: `impetus chat` driven through a
pseudo-terminal (streaming, history, /clear, /model, /bye, token rates) and `impetus models ps`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.api.conftest import ADMIN_KEY, Server

STATS = re.compile(r"\[([^\]\n]*tok/s[^\]\n]*)\]")
PROMPT_TOKENS = re.compile(r"prompt (\d+) tokens \(\d+ cached\)")


def impetus(*args: str) -> list[str]:
    return [sys.executable, "-m", "impetus.cli", *args]


def answer_stats(child: pexpect.spawn) -> str:
    child.expect(STATS)
    stats = child.match.group(1)
    child.expect(">>> ")
    return stats


def prompt_tokens(stats: str) -> int:
    m = PROMPT_TOKENS.search(stats)
    assert m, stats
    return int(m.group(1))


def test_chat_in_a_terminal(server: Server, model: str, tool_model_dir: Path) -> None:
    child = pexpect.spawn(
        sys.executable,
        impetus("chat", model, "--url", server.base_url, "--api-key", ADMIN_KEY)[1:]
        + ["--max-tokens", "6", "--temperature", "0"],
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 200),
    )
    try:
        child.expect(r"impetus chat · .* /bye to quit")
        child.expect(">>> ")
        child.sendline("Hello there")
        first = answer_stats(child)
        # streamed, counted in tokens, with the rate and the time to the first token
        assert re.match(r"6 tokens · [\d.]+ tok/s · first token \d+ ms", first), first
        assert "length" in first
        child.sendline("And then?")
        second = answer_stats(child)
        # the conversation is kept: the second prompt holds the first exchange
        assert prompt_tokens(second) > prompt_tokens(first) + 3, (first, second)
        child.sendline("/clear")
        child.expect("conversation cleared")
        child.expect(">>> ")
        child.sendline("Hello there")
        third = answer_stats(child)
        assert prompt_tokens(third) == prompt_tokens(first), (first, third)
        # /model switches; an unknown command is named, not sent to the model
        child.sendline(f"/model {tool_model_dir}")
        child.expect(f"model: {re.escape(str(tool_model_dir))}")
        child.expect(">>> ")
        child.sendline("/nonsense")
        child.expect(r"unknown command /nonsense")
        child.expect(">>> ")
        child.sendline("Hi")
        answer_stats(child)  # answered by the other model, loaded just in time
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    loaded = [m["id"] for m in server.get("admin/status").json()["models"]]
    assert str(tool_model_dir) in loaded
    server.post("admin/models/unload", {"id": str(tool_model_dir)})


def test_models_ps(server: Server, model: str, tool_model_dir: Path) -> None:
    r = server.post("admin/models/load", {"id": str(tool_model_dir), "keep_alive": 150})
    assert r.status_code == 200, r.text
    try:
        args = ["models", "ps", "--url", server.base_url, "--api-key", ADMIN_KEY]
        table = subprocess.run(impetus(*args), capture_output=True, text=True, timeout=60)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["NAME", "KIND", "SIZE", "DTYPE", "CONTEXT", "UNTIL"]
        rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
        assert "forever" in rows[model]  # loaded at start-up: pinned
        assert re.search(r"\b[23] minutes from now", rows[str(tool_model_dir)]), lines
        assert "float32" in rows[model] and "memory budget in use" in table.stdout

        as_json = subprocess.run(
            impetus(*args, "--json"), capture_output=True, text=True, timeout=60
        )
        models = {m["id"]: m for m in json.loads(as_json.stdout)}
        assert models[model]["expires_at"] is None
        tool = models[str(tool_model_dir)]
        assert tool["expires_at"] == pytest.approx(tool["last_used"] + 150)
        assert tool["memory_bytes"] > 0 and tool["dtype"]
    finally:
        server.post("admin/models/unload", {"id": str(tool_model_dir)})


def test_models_ps_without_a_server() -> None:
    out = subprocess.run(
        impetus("models", "ps", "--url", "http://127.0.0.1:9/"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert out.stderr.strip() or out.stdout.strip()
