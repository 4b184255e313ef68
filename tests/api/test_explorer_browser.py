"""The API explorer in a real (headless) browser: it loads, sends a streaming request, and never
reaches past this server (no CDN)."""

from __future__ import annotations

import json
import shutil
import time
from urllib.parse import urlparse

import pytest

from tests.api.conftest import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium"),
]


def test_explorer_sends_a_streaming_request(server: Server, model: str) -> None:
    from playwright.sync_api import sync_playwright

    origin = urlparse(server.base_url).netloc
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            hosts: set[str] = set()
            problems: list[str] = []
            page.on(
                "request", lambda r: hosts.add(urlparse(r.url).netloc or r.url.split(":", 1)[0])
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(server.url("docs"))
            page.wait_for_selector("nav button")
            page.fill("#key", server.key or "")
            page.dispatch_event("#key", "change")
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "temperature": 0,
                "stream": True,
            }
            page.fill("#op-body", json.dumps(body))
            page.click("#send")
            deadline = time.monotonic() + 30
            while " ms" not in (page.text_content("#status") or "") and time.monotonic() < deadline:
                time.sleep(0.1)
            status = page.text_content("#status") or ""
            out = page.text_content("#out") or ""
        finally:
            browser.close()
    assert status.startswith("200") and "text/event-stream" in status
    assert out.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in out
    assert hosts <= {origin, "data"}, hosts  # nothing fetched from anywhere else
    assert problems == []
