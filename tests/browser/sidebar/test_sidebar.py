"""The impetus sidebar in a real JupyterLab, driven through Debian's chromium.

The tests share one JupyterLab and one page (see conftest.py) and run in file order, as a user
would: look at the panel, download a model, unload and load, make an API key and use it, switch
the theme. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import openai
import pytest

from tests.browser.sidebar.conftest import ARTIFACTS, DEFAULT_MODEL, HUB_REPO, SLOW_REPO, LabServer
from tests.fake_hub import FakeHub

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

# Records every progress change of every download row, so that no intermediate state is missed
# between two polls from Python.
WATCH_PULLS = """() => {
  window.__impetusPulls = [];
  const record = () => {
    for (const el of document.querySelectorAll('[data-testid="impetus-pull"]')) {
      const bar = el.querySelector('[role="progressbar"]');
      const row = el.closest('[data-model-id]');
      const entry = {
        id: row ? row.getAttribute('data-model-id') : null,
        status: el.getAttribute('data-status'),
        value: bar ? bar.getAttribute('aria-valuenow') : null,
        text: (el.querySelector('[data-testid="impetus-pull-text"]') || {}).textContent || ''
      };
      const last = window.__impetusPulls[window.__impetusPulls.length - 1];
      if (!last || JSON.stringify(last) !== JSON.stringify(entry)) window.__impetusPulls.push(entry);
    }
  };
  new MutationObserver(record).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def model_row(page: Any, model_id: str) -> Any:
    return page.locator(f'[data-testid="impetus-model"][data-model-id="{model_id}"]')


def run_command(page: Any, command: str, args: dict[str, Any] | None = None) -> Any:
    return page.evaluate(
        "([c, a]) => window.jupyterapp.commands.execute(c, a)", [command, args or {}]
    )


def palette_run(page: Any, label: str) -> None:
    """Finds `label` in the command palette and runs it, as a user does.

    The palette is opened through its own command (Ctrl+Shift+C toggles it, so a key press that
    lands on a palette already open hides it). The modal palette also closes when focus leaves
    it, which a notebook opened just before does once its kernel starts: then open it again.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    palette = page.locator("#command-palette input")
    item = page.locator("#command-palette .lm-CommandPalette-item", has_text=label).first
    for _ in range(5):
        run_command(page, "apputils:activate-command-palette")
        try:
            palette.fill(label, timeout=5_000)
            item.click(timeout=5_000)
            return
        except PlaywrightTimeout:
            continue
    expect(item).to_be_visible()  # fails with Playwright's account of what it saw


def shoot(page: Any, name: str, scroll_to: str | None = None) -> None:
    """The sidebar (scrolled to the top, or to `scroll_to`) and the whole page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if scroll_to:
        page.locator(scroll_to).first.scroll_into_view_if_needed()
    else:
        page.evaluate("() => { document.querySelector('#impetus-sidebar').scrollTop = 0; }")
    page.locator("#impetus-sidebar").screenshot(path=str(ARTIFACTS / f"{name}.png"))
    page.screenshot(path=str(ARTIFACTS / f"{name}-full.png"))


def test_panel_shows_engine_and_default_model_loaded(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_test_id("impetus-engine-state")).to_have_attribute("data-state", "ready")
    expect(page.get_by_test_id("impetus-backend")).to_contain_text("CPU")
    status = lab.admin_status()
    assert status["memory_budget"] > 0
    expect(page.get_by_test_id("impetus-memory")).to_contain_text(" / ")
    row = model_row(page, DEFAULT_MODEL)
    expect(row).to_have_attribute("data-status", "loaded")
    expect(row.get_by_test_id("impetus-model-status")).to_have_text("loaded")
    # The endpoint is the page's origin + the server's base URL + impetus/v1.
    assert page.get_by_test_id("impetus-base-url").input_value() == f"{lab.url}impetus/v1"
    # Polled every second: the activity history grows.
    page.wait_for_function(
        """() => (document.querySelector('[data-testid="impetus-spark-tps"] polyline')
                 ?.getAttribute('points') ?? '').split(' ').length >= 3""",
        timeout=20_000,
    )
    shoot(page, "sidebar-light")


def test_download_from_fake_hub_shows_progress_to_completion(
    page: Any, lab: LabServer, hub: FakeHub
) -> None:
    from playwright.sync_api import expect

    page.evaluate(WATCH_PULLS)
    # Search the hub (Enter in the search box), then download the result.
    search = page.get_by_test_id("impetus-model-search")
    search.fill("tiny-llama")
    search.press("Enter")
    found = page.locator(f'[data-testid="impetus-hub-model"][data-model-id="{HUB_REPO}"]')
    expect(found).to_have_count(1)
    found.get_by_role("button", name="Download").click()
    row = model_row(page, HUB_REPO)
    expect(row.get_by_test_id("impetus-pull")).to_have_attribute("data-status", "downloading")
    shoot(page, "sidebar-download", scroll_to='[data-testid="impetus-pull"]')
    expect(row.get_by_test_id("impetus-pull")).to_have_attribute(
        "data-status", "done", timeout=120_000
    )
    log: list[dict[str, Any]] = page.evaluate("() => window.__impetusPulls")
    mine = [e for e in log if e["id"] == HUB_REPO]
    statuses = [e["status"] for e in mine]
    assert statuses[0] == "downloading" and statuses[-1] == "done", statuses
    partial = [
        float(e["value"]) for e in mine if e["status"] == "downloading" and e["value"] is not None
    ]
    assert any(0 < v < 100 for v in partial), f"no intermediate progress shown: {mine}"
    assert partial == sorted(partial), "progress went backwards"
    assert any(" / " in e["text"] for e in mine if e["status"] == "downloading"), mine
    # Every byte came from the fake hub, and the registry now has the model on disk.
    assert hub.bytes_sent >= hub.total_bytes(HUB_REPO)
    listed = {m["id"]: m for m in lab.get("impetus/admin/models").json()["data"]}
    assert listed[HUB_REPO]["downloaded"] is True
    expect(row).to_have_attribute("data-status", "downloaded")
    search.fill("")


def test_cancel_stops_a_download(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    # A hub repo id typed in the search box can be downloaded as it is.
    search = page.get_by_test_id("impetus-model-search")
    search.fill(SLOW_REPO)
    page.get_by_test_id("impetus-pull-query").click()
    row = model_row(page, SLOW_REPO)
    pull = row.get_by_test_id("impetus-pull")
    expect(pull).to_have_attribute("data-status", "downloading")
    page.wait_for_function(
        """(id) => Number(document.querySelector(`[data-model-id="${id}"] [role=progressbar]`)
                   ?.getAttribute('aria-valuenow')) > 0""",
        arg=SLOW_REPO,
        timeout=60_000,
    )
    row.get_by_role("button", name="Cancel").click()
    expect(pull).to_have_attribute("data-status", "cancelled", timeout=30_000)
    listing = lab.get("impetus/admin/models").json()
    assert SLOW_REPO not in listing.get("pulling", [])
    assert not any(m["id"] == SLOW_REPO and m["downloaded"] for m in listing["data"])
    # A cancelled download can be started again (the row offers it) or dismissed.
    expect(row.get_by_role("button", name="Download")).to_be_visible()
    row.get_by_role("button", name="dismiss").click()
    expect(row).to_have_count(0)
    search.fill("")


def test_unload_then_load_changes_status(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    row = model_row(page, DEFAULT_MODEL)
    expect(row).to_have_attribute("data-status", "loaded")
    row.get_by_role("button", name="Unload").click()
    expect(row).to_have_attribute("data-status", "downloaded", timeout=60_000)
    assert DEFAULT_MODEL not in lab.loaded()

    page.get_by_test_id("impetus-keep-alive").select_option(label="forever")
    row.get_by_role("button", name="Load").click()
    expect(row).to_have_attribute("data-status", "loaded", timeout=180_000)
    state = next(m for m in lab.admin_status()["models"] if m["id"] == DEFAULT_MODEL)
    assert (
        state["keep_alive"] is not None and state["keep_alive"] < 0
    )  # "forever" reached the engine
    expect(row).to_contain_text("keep-alive forever")
    expect(page.get_by_test_id("impetus-engine-state")).to_have_attribute("data-state", "ready")


def test_palette_load_and_unload_commands(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    row = model_row(page, "minilm")
    expect(row).to_have_attribute("data-status", "downloaded")
    palette_run(page, "impetus: Load Model")
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input").fill("minilm")
    dialog.get_by_role("button", name="OK").click()
    expect(row).to_have_attribute("data-status", "loaded", timeout=120_000)
    assert "minilm" in lab.loaded()
    run_command(page, "impetus:unload-model", {"id": "minilm"})
    expect(row).to_have_attribute("data-status", "downloaded", timeout=60_000)
    assert "minilm" not in lab.loaded()


def test_api_key_flow_works_with_the_openai_sdk(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id("impetus-create-key").click()
    key = page.get_by_test_id("impetus-new-key-value").input_value()
    assert key.startswith("imp-")
    base_url = page.get_by_test_id("impetus-base-url").input_value()

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0

    # Inference only: the key opens no Jupyter API (files, kernels, terminals).
    for path in ("api/contents", "api/kernels"):
        r = httpx.get(lab.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code in (401, 403), (path, r.status_code)

    # "Copy Python" puts a snippet with this key on the clipboard; it runs as is.
    page.get_by_test_id("impetus-copy-python").click()
    snippet = page.evaluate("() => navigator.clipboard.readText()")
    assert key in snippet and base_url in snippet
    out = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()

    # The traffic shows in the activity panel's totals.
    expect(page.get_by_test_id("impetus-activity")).to_contain_text("requests")

    # Revoke it from the list: the same client is refused from then on.
    keys = lab.get("impetus/admin/keys").json()["data"]
    key_id = next(k["id"] for k in keys if key.startswith(k["prefix"]))
    page.locator(f'[data-key-id="{key_id}"]').get_by_role("button", name="Revoke").click()
    page.locator(".jp-Dialog").get_by_role("button", name="Revoke").click()
    expect(page.locator(f'[data-key-id="{key_id}"]')).to_have_count(0)
    expect(page.get_by_test_id("impetus-new-key")).to_have_count(0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )


def test_chat_notebook_command(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    run_command(page, "impetus:open-chat", {"model": DEFAULT_MODEL})
    tab = page.locator(f'.lm-TabBar-tab[title*="chat-{DEFAULT_MODEL}.ipynb"]')
    expect(tab).to_have_count(1, timeout=60_000)
    expect(page.get_by_role("heading", name=f"Chat with {DEFAULT_MODEL}")).to_be_visible()
    nb = lab.get(f"api/contents/chat-{DEFAULT_MODEL}.ipynb").json()["content"]
    code = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]
    assert code == [f'import impetus.widgets as iw\n\niw.Chat(model="{DEFAULT_MODEL}")']


def test_benchmark_report_command_from_the_palette(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    if not (lab.root / "notebooks" / "benchmark-report.ipynb").exists():
        pytest.skip("notebooks/benchmark-report.ipynb is not in this checkout yet")
    palette_run(page, "impetus: Open Benchmark Report")
    expect(page.locator('.lm-TabBar-tab[title*="benchmark-report.ipynb"]')).to_have_count(
        1, timeout=60_000
    )


def test_dark_theme(page: Any) -> None:
    def background() -> list[int]:
        rgb = page.evaluate(
            "() => getComputedStyle(document.querySelector('.jp-ImpetusSidebar')).backgroundColor"
        )
        return [int(x) for x in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3]]

    page.evaluate("() => window.jupyterapp.shell.activateById('impetus-sidebar')")
    light = background()
    run_command(page, "apputils:change-theme", {"theme": "JupyterLab Dark"})
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    page.wait_for_timeout(500)
    dark = background()
    assert sum(dark) < sum(light), (light, dark)
    shoot(page, "sidebar-dark")
    run_command(page, "apputils:change-theme", {"theme": "JupyterLab Light"})
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'", timeout=30_000)
