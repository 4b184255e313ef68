"""`impetus models ...` through impetus.cli.main, as a user runs it."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from impetus.cli import main
from impetus.config import Settings
from impetus.models import hf_cache
from impetus.protocol import ModelState
from tests.fake_hub import FakeHub

REPO = "impetus-test/tiny-llama"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_info_rm_json(
    settings: Settings, tiny_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(tiny_folder, settings.models_path / "tiny")
    md = ["--model-dir", str(settings.models_path)]
    code, out, _ = run(capsys, "models", "list", "--json", "--backend", "cpu", *md)
    assert code == 0
    ids = {e["id"]: e for e in json.loads(out)}
    assert {"smollm2-135m", "minilm", "tiny"} <= set(ids)
    assert (
        ids["tiny"]["kind"] == "chat"
        and ids["tiny"]["memory_bytes"] == ids["tiny"]["parameters"] * 4
    )

    code, out, _ = run(capsys, "models", "info", "tiny", "--json", *md)
    info = json.loads(out)
    assert code == 0 and info["path"] == str(settings.models_path / "tiny")
    assert Path(
        info["path"], "config.json"
    ).is_file()  # a folder mlx_lm.load / mlx_lm.server can use

    code, out, _ = run(capsys, "models", "list", "--backend", "cpu", *md)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "KIND", "SOURCE"]
    assert any(line.startswith("tiny ") for line in out.splitlines())

    code, out, _ = run(capsys, "models", "rm", "tiny", "--json", *md)
    assert code == 0 and json.loads(out)["removed"] == [str(settings.models_path / "tiny")]
    code, _, err = run(capsys, "models", "rm", "tiny", *md)
    assert code == 1 and "model_not_found" in err
    code, _, err = run(capsys, "models", "rm", "../home", *md)
    assert code == 1 and "invalid_request" in err and settings.models_path.exists()


def test_pull_with_progress(
    settings: Settings, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    md = ["--model-dir", str(settings.models_path)]
    code, out, _ = run(capsys, "models", "pull", REPO, "--json", *md)
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert (
        events[-1]["status"] == "done" and events[-1]["bytes_done"] == events[-1]["bytes_total"] > 0
    )
    assert {e["status"] for e in events[:-1]} == {"downloading"}
    code, out, _ = run(capsys, "models", "info", REPO, "--json", *md)
    info = json.loads(out)
    snapshot = hf_cache.snapshot(REPO)
    assert info["source"] == "hf-cache" and info["path"] == str(snapshot)  # the HF cache
    assert snapshot is not None
    shutil.rmtree(snapshot.parent.parent)
    code, out, err = run(
        capsys, "models", "pull", REPO, *md
    )  # the progress bar (tqdm) goes to stderr
    assert code == 0 and out.strip().endswith(str(snapshot))
    assert "B/s" in err or "100%" in err


def test_pull_errors(settings: Settings, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    md = ["--model-dir", str(settings.models_path)]
    code, out, _ = run(capsys, "models", "pull", "impetus-test/missing", "--json", *md)
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-2]["status"] == "error" and lines[-1]["error"]["code"] == "model_not_found"
    code, _, err = run(capsys, "models", "pull", "not an id", *md)
    assert code == 1 and "invalid model id" in err


def test_load_needs_a_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("IMPETUS_URL", "JPY_PARENT_PID"):
        monkeypatch.delenv(name, raising=False)
    for argv in (
        ["models", "load", "x"],
        ["models", "unload", "x"],
        ["models", "pull", "x", "--load"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 1 and "needs a running impetus server" in err and "--url" in err


class _Admin(BaseHTTPRequestHandler):
    """The admin endpoints `load` / `unload` talk to (docs/architecture.md), recording requests."""

    calls: list[tuple[str, str, dict[str, Any], str | None]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append((self.command, self.path, body, self.headers.get("Authorization")))
        if body["id"] == "nope":
            data = json.dumps(
                {
                    "error": {
                        "message": "unknown model 'nope'",
                        "type": "not_found_error",
                        "param": "model",
                        "code": "model_not_found",
                    }
                }
            ).encode()
            self.send_response(404)
        elif self.path.endswith("/load"):
            state = ModelState(
                id=body["id"], kind="chat", path="/m", dtype="float32", source_dtype="bfloat16",
                memory_bytes=1 << 20, context_length=64, loaded_at=1.0, last_used=1.0,
            )  # fmt: skip
            data = msgspec.json.encode(state)
            self.send_response(200)
        else:
            data = json.dumps({"id": body["id"], "unloaded": True}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def admin_server() -> Iterator[str]:
    _Admin.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Admin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_load_and_unload_over_http(admin_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "models",
        "load",
        "tiny",
        "--url",
        admin_server,
        "--api-key",
        "k1",
        "--keep-alive",
        "-1",
    )
    assert code == 0 and "loaded tiny (float32, 1.0 MB)" in out
    code, out, _ = run(capsys, "models", "unload", "tiny", "--url", admin_server, "--json")
    assert code == 0 and json.loads(out)["unloaded"] is True
    code, _, err = run(capsys, "models", "load", "nope", "--url", admin_server)
    assert code == 1 and "model_not_found" in err and "unknown model 'nope'" in err
    assert [(c[1], c[2], c[3]) for c in _Admin.calls] == [
        ("/admin/models/load", {"id": "tiny", "keep_alive": -1.0}, "Bearer k1"),
        ("/admin/models/unload", {"id": "tiny"}, None),
        ("/admin/models/load", {"id": "nope"}, None),
    ]
