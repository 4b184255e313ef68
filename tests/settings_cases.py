"""One table of settings cases, run against both front ends: `impetus serve` (flags) and the
Jupyter extension (traits). Each row: settings file, environment, values given by the front end
(flags or traits), and what Settings must end up with. Precedence: given > env > file > default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# (id, settings file, environment, given by the front end, expected)
Case = tuple[str, dict[str, Any], dict[str, str], dict[str, Any], dict[str, Any]]

PRECEDENCE: list[Case] = [
    (
        "default",
        {},
        {},
        {},
        {"max_queue": 512, "models": [], "allow_model_paths": False, "ranks": "auto"},
    ),
    ("file over default", {"max_queue": 7}, {}, {}, {"max_queue": 7}),
    ("env over file", {"max_queue": 7}, {"IMPETUS_MAX_QUEUE": "8"}, {}, {"max_queue": 8}),
    (
        "given over env and file",
        {"max_queue": 7},
        {"IMPETUS_MAX_QUEUE": "8"},
        {"max_queue": 9},
        {"max_queue": 9},
    ),
    ("given over default", {}, {}, {"request_timeout": 2.5}, {"request_timeout": 2.5}),
    (
        "each field from its own layer",
        {"max_batch": 3, "prefill_batch": 2, "keep_alive": 5.0},
        {"IMPETUS_PREFILL_BATCH": "4", "IMPETUS_KEEP_ALIVE": "-1"},
        {"keep_alive": 60.0},
        {"max_batch": 3, "prefill_batch": 4, "keep_alive": 60.0},
    ),
    (
        "list from the env",
        {"models": ["c"]},
        {"IMPETUS_MODELS": "a, b"},
        {},
        {"models": ["a", "b"]},
    ),
    ("list from the file", {"models": ["c", "d"]}, {}, {}, {"models": ["c", "d"]}),
    (
        "list given",
        {"models": ["c"]},
        {"IMPETUS_MODELS": '["a"]'},
        {"models": ["x", "y"]},
        {"models": ["x", "y"]},
    ),
    (
        "sizes with units",
        {"max_body_bytes": "1M"},
        {"IMPETUS_PROMPT_CACHE_BYTES": "2G"},
        {"memory_budget": "3G"},
        {"max_body_bytes": 1 << 20, "prompt_cache_bytes": 2 << 30, "memory_budget": 3 << 30},
    ),
    (
        "false given over true in the file",
        {"allow_model_paths": True},
        {},
        {"allow_model_paths": False},
        {"allow_model_paths": False},
    ),
    (
        "boolean env over file",
        {"allow_model_paths": False},
        {"IMPETUS_ALLOW_MODEL_PATHS": "true"},
        {},
        {"allow_model_paths": True},
    ),
    (
        "paths and choices",
        {"model_dir": "/srv/models", "dtype": "float16"},
        {"IMPETUS_DTYPE": "bfloat16", "IMPETUS_HOME": "/srv/home"},
        {},
        {"model_dir": Path("/srv/models"), "dtype": "bfloat16", "home": Path("/srv/home")},
    ),
    # ranks: the word auto or a number, from every layer
    ("ranks auto from the env", {"ranks": 4}, {"IMPETUS_RANKS": "auto"}, {}, {"ranks": "auto"}),
    ("ranks number from the env", {"ranks": "auto"}, {"IMPETUS_RANKS": "2"}, {}, {"ranks": 2}),
    (
        "ranks auto given",
        {"ranks": 4},
        {"IMPETUS_RANKS": "2"},
        {"ranks": "auto"},
        {"ranks": "auto"},
    ),
    ("ranks number given", {}, {"IMPETUS_RANKS": "auto"}, {"ranks": 2}, {"ranks": 2}),
]

# (id, settings file, environment, given, fragments the error message must contain)
# (id, settings file (a dict, or text), environment, given by the front end, parts of the error)
BadCase = tuple[str, dict[str, Any] | str, dict[str, str], dict[str, Any], list[str]]

BAD: list[BadCase] = [
    ("given out of range", {}, {}, {"max_queue": 0}, ["greater than or equal to 1", "(got 0)"]),
    (
        "env not a number",
        {},
        {"IMPETUS_MAX_QUEUE": "many"},
        {},
        ["IMPETUS_MAX_QUEUE:", "valid integer", "'many'"],
    ),
    (
        "file out of range",
        {"prefill_step": 2},
        {},
        {},
        ["prefill_step in settings file", "settings.toml", "greater than or equal to 16"],
    ),
    ("unknown key in the file", {"max_qeue": 3}, {}, {}, ["unknown setting 'max_qeue'"]),
    (
        "not a size",
        {},
        {"IMPETUS_MEMORY_BUDGET": "lots"},
        {},
        ["IMPETUS_MEMORY_BUDGET:", "not a size"],
    ),
    ("bad choice", {"dtype": "int3"}, {}, {}, ["dtype in settings file", "'int3'"]),
    (
        "ranks neither auto nor a number",
        {},
        {"IMPETUS_RANKS": "all"},
        {},
        ["IMPETUS_RANKS:", "'auto'"],
    ),
    ("ranks out of range", {}, {}, {"ranks": 65}, ["less than or equal to 64", "65"]),
    ("bad blas", {}, {"IMPETUS_BLAS": "fast"}, {}, ["IMPETUS_BLAS:", "auto, off"]),
    ("not TOML", "max_queue = = 3", {}, {}, ["settings file", "settings.toml"]),
    (
        "named file missing",
        {},
        {"IMPETUS_SETTINGS_FILE": "/nonexistent/impetus.toml"},
        {},
        ["settings file /nonexistent/impetus.toml does not exist"],
    ),
]


def toml(values: dict[str, Any]) -> str:
    """Flat TOML: JSON's scalars and lists of strings are written the same way."""
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def prepare(
    monkeypatch: pytest.MonkeyPatch,
    config_home: Path,
    file: dict[str, Any] | str,
    env: dict[str, str],
) -> Path:
    """A clean IMPETUS_* environment plus `env`, and `file` at the default settings path."""
    for name in list(os.environ):
        if name.startswith("IMPETUS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    path = config_home / "impetus" / "settings.toml"
    if file:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file if isinstance(file, str) else toml(file))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return path


def check(settings: Any, expected: dict[str, Any]) -> None:
    got = {k: getattr(settings, k) for k in expected}
    assert got == expected, f"{got} != {expected}"


def each_case(table: list[Case] | list[BadCase]) -> pytest.MarkDecorator:
    """Run a test once per row of `table` (PRECEDENCE or BAD), as its `case` argument, named by
    the row's id: both front ends' tests take the rows the same way."""
    return pytest.mark.parametrize("case", table, ids=[c[0] for c in table])
