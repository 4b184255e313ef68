"""The extension's settings: traits > IMPETUS_* > settings file > defaults, the same table as
`impetus serve` (tests/settings_cases.py), on a real Jupyter server (no engine started)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from impetus.config import Settings, SettingsError, serve_only
from impetus.jupyter.extension import SETTINGS_TRAITS, ImpetusExtension
from tests.settings_cases import BAD, PRECEDENCE, BadCase, Case, check, each_case, prepare


def server_config(given: dict[str, Any]) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"impetus": True},
            "reraise_server_extension_failures": True,
        },
        "ImpetusExtension": {"engine_start": "lazy", **given},
    }


def service_settings(app: Any) -> Settings:
    settings: Settings = app.web_app.settings["impetus_service"].settings
    return settings


@pytest.fixture()
def start_case(
    jp_configurable_serverapp: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[[Case | BadCase], Any]:
    """Start a Jupyter server with a row's settings file, environment and traits."""

    def start(case: Case | BadCase) -> Any:
        _, file, env, given, _ = case
        prepare(monkeypatch, tmp_path / "xdg", file, env)
        return jp_configurable_serverapp(config=server_config(given))

    return start


@each_case(PRECEDENCE)
def test_precedence(start_case: Callable[[Case], Any], case: Case) -> None:
    expected = case[-1]
    check(service_settings(start_case(case)), expected)


@each_case(BAD)
def test_bad_values_stop_the_extension_with_their_source(
    start_case: Callable[[BadCase], Any], case: BadCase
) -> None:
    *_, given, fragments = case
    with pytest.raises(SettingsError) as e:
        start_case(case)
    for fragment in [*fragments, *(f"ImpetusExtension.{k}" for k in given)]:
        assert fragment in str(e.value)


def test_command_line_traits(
    jp_configurable_serverapp: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prepare(monkeypatch, tmp_path / "xdg", {"max_queue": 7, "models": ["c"]}, {})
    named = tmp_path / "named.toml"
    named.write_text('prefill_step = 64\nmodels = ["n"]\n')
    app = jp_configurable_serverapp(
        config=server_config({}),
        argv=[
            "--ImpetusExtension.models=a,b",
            "--ImpetusExtension.max_body_bytes=2M",
            "--ImpetusExtension.ranks=2",  # auto or a number: the number stays an int
            f"--ImpetusExtension.settings_file={named}",
        ],
    )
    # the named file replaces the default one: its max_queue no longer applies
    check(
        service_settings(app),
        {
            "models": ["a", "b"],
            "max_body_bytes": 2 << 20,
            "prefill_step": 64,
            "max_queue": 512,
            "ranks": 2,
        },
    )


def test_serve_listener_settings_do_not_apply(
    jp_configurable_serverapp: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # IMPETUS_API_KEY is what clients in this environment present; it must not become a
    # full-access key of the Jupyter server
    prepare(monkeypatch, tmp_path / "xdg", {"allow_origin": "*"}, {"IMPETUS_API_KEY": "client-key"})
    app = jp_configurable_serverapp(config=server_config({}))
    settings = service_settings(app)
    assert settings.api_keys == [] and settings.allow_origin == ""
    assert app.web_app.settings["impetus_service"].keys.match("client-key") is None


def test_every_setting_has_a_trait() -> None:
    """Traits are made from the Settings fields, so none can be missed or mistyped."""
    jupyter_fields = {name for name in Settings.model_fields if not serve_only(name)}
    assert set(SETTINGS_TRAITS) == jupyter_fields
    traits = ImpetusExtension.class_traits(config=True)
    for name in jupyter_fields:
        assert traits[name].help == Settings.model_fields[name].description
