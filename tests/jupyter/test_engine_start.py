"""Inside Jupyter the engine starts on first use (Jupyter's habit with kernels): a server that
nobody asks for inference runs no MLX process. `engine_start = "eager"` starts it with the server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jupyter.test_extension import HELLO, base, token


async def started(app: Any) -> None:
    """What a real server does once its loop runs (pytest-jupyter stops short of it): start the
    extensions, which is where an eager engine start happens."""
    await app._post_start()


def headers(app: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(app)}"}


async def status(app: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.get(base(app) + "admin/status", headers=headers(app))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_ready(app: Any, model: str, timeout: float = 120) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        st = await status(app)
        if st["state"] == "ready" and model in [m["id"] for m in st["models"]]:
            return st
        assert st["state"] in ("starting", "ready"), st
        assert loop.time() < deadline, st
        await asyncio.sleep(0.2)


async def test_not_started_until_the_start_button(
    jp_fetch: Any, jp_serverapp: Any, tiny_model_dir: Path
) -> None:
    await started(jp_serverapp)
    await asyncio.sleep(1)  # an eager start would be under way by now
    st = await status(jp_serverapp)
    assert st["state"] == "stopped" and st["models"] == []
    assert jp_serverapp.web_app.settings["impetus_service"].engine.pid is None
    async with httpx.AsyncClient(timeout=30) as c:
        ready = await c.get(base(jp_serverapp) + "ready")
        assert ready.status_code == 503 and "not started" in ready.text
        # (jp_fetch: the fixture that makes the server listen)
        # polling the status and the model list (what the sidebar does) starts nothing
        models = await c.get(base(jp_serverapp) + "admin/models", headers=headers(jp_serverapp))
        assert models.status_code == 200
        assert (await status(jp_serverapp))["state"] == "stopped"
        # the sidebar's Start button
        r = await c.post(base(jp_serverapp) + "admin/engine/start", headers=headers(jp_serverapp))
        assert r.status_code == 202 and r.json()["state"] in ("starting", "ready")
    # the start-up models load with it
    st = await wait_ready(jp_serverapp, str(tiny_model_dir))
    assert st["pid"] > 0
    async with httpx.AsyncClient(timeout=30) as c:
        again = await c.post(
            base(jp_serverapp) + "admin/engine/start", headers=headers(jp_serverapp)
        )
        assert again.status_code == 202 and again.json()["state"] == "ready"
        assert (await status(jp_serverapp))["pid"] == st["pid"]  # no second engine


async def test_the_first_inference_request_starts_it(
    jp_fetch: Any, jp_serverapp: Any, tiny_model_dir: Path
) -> None:
    assert (await status(jp_serverapp))["state"] == "stopped"
    async with httpx.AsyncClient(timeout=120) as c:
        r = await c.post(
            base(jp_serverapp) + "v1/chat/completions",
            headers=headers(jp_serverapp),
            json={"model": str(tiny_model_dir), "messages": HELLO, "max_tokens": 3},
        )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 3
    assert (await status(jp_serverapp))["state"] == "ready"


class TestEager:
    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        jp_server_config["ImpetusExtension"]["engine_start"] = "eager"
        return jp_server_config

    async def test_it_starts_with_the_server(
        self, jp_fetch: Any, jp_serverapp: Any, tiny_model_dir: Path
    ) -> None:
        # no request at all: the engine and the start-up model come up by themselves
        await started(jp_serverapp)
        st = await wait_ready(jp_serverapp, str(tiny_model_dir))
        assert st["pid"] > 0
