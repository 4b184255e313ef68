"""State in the right places: data (keys, benchmark history) in the user data folder, models in
the user cache folder, XDG variables honoured; IMPETUS_HOME keeps everything in one folder; an
old single-folder layout moves into place once, overwriting nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from impetus.config import Settings, migrate_legacy_home

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="XDG folders are Linux's")


@pytest.fixture
def xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("IMPETUS_HOME", "IMPETUS_MODEL_DIR", "IMPETUS_SETTINGS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    return tmp_path


def test_default_folders_follow_xdg(xdg: Path) -> None:
    s = Settings()
    assert s.home == xdg / "xdg_data_home" / "impetus"
    assert s.models_path == xdg / "xdg_cache_home" / "impetus" / "models"
    # the engine process gets the dumped settings: it must land on the same folders
    child = Settings.model_validate_json(s.model_dump_json())
    assert (child.home, child.models_path) == (s.home, s.models_path)


def test_impetus_home_keeps_one_folder(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPETUS_HOME", str(xdg / "mine"))
    s = Settings()
    assert s.home == xdg / "mine" and s.models_path == xdg / "mine" / "models"
    assert Settings(model_dir=xdg / "elsewhere").models_path == xdg / "elsewhere"


def test_an_old_layout_moves_once(xdg: Path) -> None:
    legacy = xdg / "old-home"
    (legacy / "models" / "smollm2-135m").mkdir(parents=True)
    (legacy / "models" / "smollm2-135m" / "config.json").write_text("{}")
    (legacy / "api_keys.json").write_text('{"keys": []}')
    (legacy / "bench.sqlite").write_bytes(b"SQLite format 3\x00")
    s = Settings()
    s.home.mkdir(parents=True)
    (s.home / "bench.sqlite").write_bytes(b"newer")  # already there: left alone

    moved = migrate_legacy_home(s, legacy)
    assert len(moved) == 2
    assert (s.home / "api_keys.json").read_text() == '{"keys": []}'
    assert (s.models_path / "smollm2-135m" / "config.json").is_file()
    assert (s.home / "bench.sqlite").read_bytes() == b"newer"
    assert (legacy / "bench.sqlite").exists() and not (legacy / "api_keys.json").exists()
    assert migrate_legacy_home(s, legacy) == []  # idempotent


def test_a_chosen_home_is_not_migrated(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = xdg / "old-home"
    legacy.mkdir()
    (legacy / "api_keys.json").write_text("{}")
    monkeypatch.setenv("IMPETUS_HOME", str(xdg / "mine"))
    assert migrate_legacy_home(Settings(), legacy) == []
    assert (legacy / "api_keys.json").exists()


def test_the_old_layout_is_looked_for_in_the_current_home(
    xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old folder is HOME's at the time of the call, not at import: a process run under
    another HOME (pytest-jupyter gives every Jupyter test one) once moved the real
    ~/.cache/impetus/models into its temporary home, where they were deleted with it."""
    home = xdg / "another-home"
    monkeypatch.setenv("HOME", str(home))
    (home / ".cache" / "impetus").mkdir(parents=True)
    (home / ".cache" / "impetus" / "api_keys.json").write_text('{"keys": []}')
    s = Settings()
    assert migrate_legacy_home(s) == [
        f"{home / '.cache' / 'impetus' / 'api_keys.json'} -> {s.home / 'api_keys.json'}"
    ]
