"""`impetus serve` settings: flags > IMPETUS_* > settings file > defaults (tests/settings_cases.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from impetus.api.serve import flag_name, settings_from_args
from impetus.cli import build_parser
from impetus.config import Settings, SettingsError, env_name
from tests.api.conftest import serve_command
from tests.settings_cases import BAD, PRECEDENCE, BadCase, Case, check, each_case, prepare


def flags(given: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in given.items():
        if isinstance(value, bool):
            out.append(f"{flag_name(name)}={str(value).lower()}")
        elif isinstance(value, list):
            for item in value:
                out += [flag_name(name), str(item)]
        else:
            out += [flag_name(name), str(value)]
    return out


def parse(*argv: str) -> Settings:
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


@each_case(PRECEDENCE)
def test_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: Case) -> None:
    _, file, env, given, expected = case
    prepare(monkeypatch, tmp_path, file, env)
    check(parse(*flags(given)), expected)


@each_case(BAD)
def test_bad_values_name_their_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: BadCase
) -> None:
    _, file, env, given, fragments = case
    prepare(monkeypatch, tmp_path, file, env)
    with pytest.raises(SettingsError) as e:
        parse(*flags(given))
    for fragment in [*fragments, *(flag_name(k) for k in given)]:
        assert fragment in str(e.value)


def test_serve_only_settings_and_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prepare(
        monkeypatch,
        tmp_path,
        {"port": 9001, "host": "0.0.0.0", "no_auth": True},
        {"IMPETUS_API_KEY": "env-1,env-2", "IMPETUS_PORT": "9002"},
    )
    s = parse("--no-auth=false")
    assert (s.host, s.port, s.no_auth, s.api_keys) == ("0.0.0.0", 9002, False, ["env-1", "env-2"])
    # the flag replaces the environment's keys (one precedence for every setting)
    assert parse("--api-key", "flag-1").api_keys == ["flag-1"]
    # keys never leave the process: not in the engine's settings JSON, not in repr
    assert "env-1" not in s.model_dump_json() and "env-1" not in repr(s)


def test_named_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prepare(monkeypatch, tmp_path, {"max_queue": 7}, {})
    named = tmp_path / "other.toml"
    named.write_text("max_queue = 11\n")
    assert parse("--settings-file", str(named)).max_queue == 11
    monkeypatch.setenv("IMPETUS_SETTINGS_FILE", str(named))
    assert parse().max_queue == 11
    # what the engine process receives is the merged result, not the file's name
    assert "settings_file" not in parse().model_dump()


def test_the_real_command_refuses_a_bad_value(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPETUS_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path), IMPETUS_MAX_BATCH="0")
    proc = subprocess.run(
        serve_command("--port", "0", "--no-auth"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "impetus serve: invalid settings: IMPETUS_MAX_BATCH: Input should be greater than or equal to 1"
        in proc.stderr
    )


def test_help_names_every_variable() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for name in Settings.model_fields:
        assert flag_name(name) in text
    assert "IMPETUS_MAX_QUEUE" in text and "IMPETUS_API_KEY" in text and "settings.toml" in text


def test_the_configuration_page_lists_every_setting() -> None:
    page = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    rows = {
        line.split("|")[1].strip(" `"): line for line in page.splitlines() if line.startswith("| `")
    }
    for name in Settings.model_fields:
        assert f"`{flag_name(name)}`" in rows[name] and f"`{env_name(name)}`" in rows[name], name


def test_instance_name_is_host_and_port_unless_given() -> None:
    import socket

    from impetus.api.serve import instance_name

    assert instance_name("auto", 8001) == f"{socket.gethostname()}:8001"
    assert instance_name("gpu-node-3", 8001) == "gpu-node-3"
    assert instance_name("", 8001) == ""  # no header
    assert settings_from_args(build_parser().parse_args(["serve"])).instance_id == "auto"
