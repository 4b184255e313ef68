"""The impetus API inside Jupyter: under {base_url}impetus/, Jupyter's token, inference keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai

HELLO = [{"role": "user", "content": "Hello"}]


def base(jp_serverapp: Any) -> str:
    """http://localhost:PORT/a%40b/impetus/ (pytest-jupyter's base_url is /a%40b/)."""
    return f"http://localhost:{jp_serverapp.port}{jp_serverapp.base_url}impetus/"


def token(jp_serverapp: Any) -> str:
    return str(jp_serverapp.identity_provider.token)


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code is not None:
        assert err["code"] == code


async def test_openai_sdk_with_the_jupyter_token(
    jp_fetch: Any, jp_serverapp: Any, tiny_model_dir: Path
) -> None:
    model = str(tiny_model_dir)
    async with openai.AsyncOpenAI(
        base_url=base(jp_serverapp) + "v1", api_key=token(jp_serverapp), max_retries=0
    ) as client:
        models = await client.models.list()
        assert model in [
            m.id for m in models.data
        ]  # loaded at start-up from the extension's config
        r = await client.chat.completions.create(
            model=model, messages=HELLO, max_tokens=5, temperature=0
        )  # type: ignore[arg-type]
        assert r.usage and r.usage.completion_tokens == 5
        stream = await client.chat.completions.create(
            model=model,
            messages=HELLO,
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
        chunks = [c async for c in stream]
        assert chunks[-1].usage and chunks[-1].usage.completion_tokens == 4
        emb = await client.embeddings.create(model="minilm", input="hello")
        assert len(emb.data[0].embedding) == 384
        comp = await client.completions.create(
            model=model, prompt="Hi", max_tokens=3, temperature=0
        )
        assert comp.choices[0].finish_reason == "length"

    # the same handlers as `impetus serve`, under the server's base_url
    ready = await jp_fetch("impetus", "ready")
    assert json.loads(ready.body)["status"] == "ready"
    status = json.loads((await jp_fetch("impetus", "admin", "status")).body)
    assert status["endpoint"].endswith("/a%40b/impetus/v1") and status["pid"] > 0
    metrics = (await jp_fetch("impetus", "metrics")).body.decode()
    assert "impetus:generation_tokens_total" in metrics
    doc = json.loads((await jp_fetch("impetus", "openapi.json")).body)
    assert doc["servers"] == [{"url": "/a%40b/impetus"}]


class _NoCookies:
    """httpx without a cookie jar: each request stands on its own credentials."""

    async def _do(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as client:
            return await client.request(method, url, **kw)

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self._do("GET", url, **kw)

    async def post(self, url: str, **kw: Any) -> httpx.Response:
        return await self._do("POST", url, **kw)

    async def delete(self, url: str, **kw: Any) -> httpx.Response:
        return await self._do("DELETE", url, **kw)


async def test_auth_matrix(jp_fetch: Any, jp_serverapp: Any, tiny_model_dir: Path) -> None:
    url = base(jp_serverapp)
    tok = token(jp_serverapp)
    http = _NoCookies()
    if True:  # each request on its own, without the login cookie a token request leaves behind
        bearer = {"Authorization": f"Bearer {tok}"}
        assert (await http.get(url + "v1/models", headers=bearer)).status_code == 200
        # no credentials, wrong credentials: 401 in OpenAI's shape (not Jupyter's 403 page)
        assert_openai_error(await http.get(url + "v1/models"), 401, "missing_api_key")
        assert_openai_error(
            await http.get(url + "v1/models", headers={"Authorization": "Bearer nope"}),
            401,
            "invalid_api_key",
        )
        assert_openai_error(await http.post(url + "v1/chat/completions", json={}), 401)
        # public endpoints
        for path in ("health", "ready", "openapi.json", "docs"):
            assert (await http.get(url + path)).status_code == 200, path

        # an inference-only key, created with the token
        r = await http.post(url + "admin/keys", json={"name": "sdk"}, headers=bearer)
        assert r.status_code == 201
        key = r.json()["key"]
        by_key = {"Authorization": f"Bearer {key}"}
        body = {"model": str(tiny_model_dir), "messages": HELLO, "max_tokens": 2}
        assert (
            await http.post(url + "v1/chat/completions", json=body, headers=by_key)
        ).status_code == 200
        assert_openai_error(
            await http.get(url + "admin/status", headers=by_key), 403, "insufficient_scope"
        )
        assert_openai_error(
            await http.get(url + "metrics", headers=by_key), 403, "insufficient_scope"
        )
        # ... and it is no Jupyter credential: the rest of the server refuses it
        jupyter_api = f"http://localhost:{jp_serverapp.port}{jp_serverapp.base_url}api/contents"
        assert (await http.get(jupyter_api, headers=by_key)).status_code == 403
        assert (await http.get(jupyter_api, headers=bearer)).status_code == 200

        # foreign Origin: fine with a token or key in the header, refused without
        evil = {"Origin": "https://evil.example"}
        assert (await http.get(url + "v1/models", headers={**bearer, **evil})).status_code == 200
        assert (
            await http.post(url + "v1/chat/completions", json=body, headers={**by_key, **evil})
        ).status_code == 200
        assert_openai_error(await http.get(url + "v1/models", headers=evil), 403, "cross_origin")

        key_id = r.json()["id"]
        assert (await http.delete(url + f"admin/keys/{key_id}", headers=bearer)).status_code == 204
        assert_openai_error(
            await http.get(url + "v1/models", headers=by_key), 401, "invalid_api_key"
        )


async def test_browser_session_needs_the_xsrf_token(
    jp_fetch: Any, jp_serverapp: Any, tiny_model_dir: Path
) -> None:
    """The sidebar and the explorer page use the login cookie; their POSTs need _xsrf."""
    url = base(jp_serverapp)
    async with httpx.AsyncClient(timeout=60) as browser:
        page = await browser.get(url + "docs", params={"token": token(jp_serverapp)})
        assert page.status_code == 200
        assert f'src="{jp_serverapp.base_url}impetus/docs/explorer.js"' in page.text
        xsrf = browser.cookies.get("_xsrf")
        assert xsrf and any(name.startswith("username-") for name in browser.cookies)
        # the session cookie alone reads ...
        assert (await browser.get(url + "v1/models")).status_code == 200
        body = {"model": str(tiny_model_dir), "messages": HELLO, "max_tokens": 2}
        # ... but cannot POST without the XSRF token (a forged cross-site form would not have it)
        forged = await browser.post(url + "v1/chat/completions", json=body)
        assert_openai_error(forged, 403)
        ok = await browser.post(
            url + "v1/chat/completions", json=body, headers={"X-XSRFToken": xsrf}
        )
        assert ok.status_code == 200, ok.text


async def test_unknown_model_and_the_engine_stops_with_the_server(
    jp_fetch: Any, jp_serverapp: Any, tiny_model_dir: Path
) -> None:
    ext = jp_serverapp.web_app.settings["impetus_service"]
    async with openai.AsyncOpenAI(
        base_url=base(jp_serverapp) + "v1", api_key=token(jp_serverapp), max_retries=0
    ) as client:
        with __import__("pytest").raises(openai.NotFoundError):
            await client.chat.completions.create(model="not-a-model", messages=HELLO)  # type: ignore[arg-type]
    pid = (await ext.engine.status()).pid
    assert pid and Path(f"/proc/{pid}").exists()
    await (
        jp_serverapp.cleanup_extensions()
    )  # what the server does at exit: stop_extension -> engine closed
    assert ext.engine.state == "stopped"
    assert (
        not Path(f"/proc/{pid}").exists()
        or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    )
