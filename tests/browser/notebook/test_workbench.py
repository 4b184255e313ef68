"""Real browser: JupyterLab runs notebooks/magics.ipynb (`%%chat`, `--json`, `ask_async`, a live
`%impetus bench`) and notebooks/compare.ipynb (three columns streaming side by side), against the
engine of that Jupyter server. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

from pathlib import Path

from tests.browser.notebook.lab import (
    ARTIFACTS,
    BROWSER_MARKS,
    lab_page,
    open_and_run,
    wait_all_cells_done,
)

pytestmark = BROWSER_MARKS


def test_magics_and_compare_notebooks_in_the_browser(lab: tuple[str, str, Path]) -> None:
    from playwright.sync_api import expect

    base, token, _ = lab
    with lab_page(lab, "magics.ipynb", "workbench-failure.png", 1200) as page:
        wait_all_cells_done(page)
        tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback")
        assert not tracebacks.count(), tracebacks.first.text_content()
        # %%chat answers rendered as Markdown, each with its statistics line
        answers = page.locator(".jp-RenderedMarkdown.jp-OutputArea-output sub")
        expect(answers.first).to_contain_text("tokens", timeout=60_000)
        assert answers.count() >= 3, "two chat cells and one --json cell answered"
        expect(page.locator(".jp-RenderedMarkdown pre").first).to_be_attached()  # --json
        # tokens coloured by probability, alternatives in their titles; a JSON answer
        tokens = page.locator(".impetus-chat .impetus-tok")
        expect(tokens.first).to_be_attached(timeout=60_000)
        assert "%" in (tokens.first.get_attribute("title") or "")
        expect(page.locator(".impetus-chat .impetus-json").first).to_contain_text('"fruit"')
        tokens.first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "chat-probabilities.png"))
        # the bench task: its live chart and a finished progress line
        task = page.locator(".impetus-task").last
        expect(task).to_contain_text("profiles", timeout=120_000)
        expect(task.locator("canvas").first).to_be_visible(timeout=60_000)
        task.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "magics-bench.png"))
        page.locator(".jp-RenderedMarkdown sub").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "magics-chat.png"))

        open_and_run(page, base, token, "compare.ipynb")
        wait_all_cells_done(page)
        panel = page.locator(".impetus-compare").last
        columns = panel.locator(".impetus-compare-column")
        expect(columns).to_have_count(3, timeout=60_000)
        for i in range(3):
            expect(columns.nth(i)).to_contain_text("tokens", timeout=120_000)
            expect(columns.nth(i).locator(".impetus-compare-text")).not_to_have_text("")
        panel.scroll_into_view_if_needed()
        panel.screenshot(path=str(ARTIFACTS / "compare.png"))
