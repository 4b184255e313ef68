"""Real browser: JupyterLab runs notebooks/quickstart.ipynb, a question typed into the chat panel
streams back. Debian's chromium driven by Playwright (never a downloaded browser).

Run: `.venv/bin/pytest tests/browser/notebook -m browser -x -q`; the screenshot lands in
tests/artifacts/ (kept by CI).
"""

from __future__ import annotations

from pathlib import Path

from tests.browser.notebook.lab import ARTIFACTS, BROWSER_MARKS, lab_page, wait_all_cells_done

pytestmark = BROWSER_MARKS


def test_quickstart_chat_streams_in_the_browser(lab: tuple[str, str, Path]) -> None:
    from playwright.sync_api import expect

    with lab_page(lab, "quickstart.ipynb", "quickstart-failure.png", 1000) as page:
        chat = page.locator(".impetus-chat").first
        chat.wait_for(timeout=300_000)
        wait_all_cells_done(page)
        # the panel talks to the engine of this Jupyter server, not to a private one
        expect(chat.locator(".impetus-status")).to_contain_text("/impetus/", timeout=30_000)
        answers = chat.locator(".impetus-msg.impetus-assistant:not(.impetus-pending)")
        before = answers.count()
        assert before >= 1, "the notebook's own question was answered in the panel"

        # record the pending answer's length at every DOM change: streamed text grows in steps
        page.evaluate(
            """(root) => {
                window.__impetusLengths = [];
                new MutationObserver(() => {
                    const body = root.querySelector('.impetus-pending .impetus-body');
                    const a = window.__impetusLengths;
                    if (body && a[a.length - 1] !== body.textContent.length) a.push(body.textContent.length);
                }).observe(root, { subtree: true, childList: true, characterData: true });
            }""",
            chat.element_handle(),
        )
        chat.locator("textarea.impetus-input").fill("Name three colours of the rainbow.")
        chat.locator("textarea.impetus-input").press("Enter")
        page.wait_for_function("() => window.__impetusLengths.some((n) => n > 0)", timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / "quickstart-chat-streaming.png"))
        expect(answers).to_have_count(before + 1, timeout=300_000)
        last = answers.nth(before)
        expect(last.locator(".impetus-body")).not_to_have_text("")
        expect(last.locator(".impetus-stats")).to_contain_text("tok/s")
        lengths = page.evaluate("() => window.__impetusLengths")
        assert len([n for n in lengths if n > 0]) >= 2, f"text did not stream: {lengths}"
        chat.scroll_into_view_if_needed()
        chat.screenshot(path=str(ARTIFACTS / "quickstart-chat.png"))

        # the other tabs render too: the registry list, and live Bokeh charts
        workbench = page.locator(".widget-tab").first
        workbench.get_by_role("tab", name="Models").click()
        expect(workbench.locator("select option", has_text="smollm2-135m").first).to_be_attached()
        expect(workbench).to_contain_text("budget", timeout=30_000)
        workbench.screenshot(path=str(ARTIFACTS / "quickstart-models.png"))
        workbench.get_by_role("tab", name="Dashboard").click()
        expect(workbench.locator("canvas").first).to_be_visible(timeout=60_000)
        page.wait_for_timeout(3_000)  # a few one-second refreshes on the charts
        workbench.screenshot(path=str(ARTIFACTS / "quickstart-dashboard.png"))
