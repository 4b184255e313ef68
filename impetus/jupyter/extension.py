"""The jupyter_server extension: the impetus API under `{base_url}impetus/`, engine supervised here.

Enabled on install through `etc/jupyter/jupyter_server_config.d/impetus.json`. Configure it like
any Jupyter app (`c.ImpetusExtension.models = ["smollm2-135m"]` in jupyter_server_config.py, or
`--ImpetusExtension.models=...` on the command line). Its traits are made from the fields of
`impetus.config.Settings`, one each with the same name, so they cannot drift apart; a trait left
unset defers to `IMPETUS_*`, then the config file, then the default (docs/configuration.md). The
fields of `impetus serve`'s own listener (host, port, keys, CORS, shutdown) have no trait: the
Jupyter server's settings play that part here.

Authentication is Jupyter's (token as `Authorization: Bearer`, or the browser session) plus the
inference-only API keys of `admin/keys`.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Bool, Enum, Float, HasTraits, Integer, List, TraitType, Unicode, Union

from impetus.api.base import SERVICE_KEY
from impetus.api.openapi import ROUTES_SETTING
from impetus.api.routes import ROUTES, build_handlers
from impetus.api.service import ImpetusService
from impetus.config import Settings, is_byte_field, serve_only

PREFIX = "impetus/"


class _StrList(List):
    """A list of strings that keeps a command-line value whole (`--ImpetusExtension.models=a,b`):
    traitlets would parse it as a Python literal and, failing, drop it as None; Settings splits
    it (commas or a JSON list) like the environment variable."""

    def from_string(self, s: str) -> list[str]:
        return [s]


def _trait(name: str, annotation: Any, help_: str) -> TraitType[Any, Any]:
    """The traitlet for one Settings field: None (unset) by default, so that the environment,
    the config file and the field's default still apply beneath it."""
    kw: dict[str, Any] = {"default_value": None, "allow_none": True, "help": help_}
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) > 1:  # ranks: "auto" or an int; `--ImpetusExtension.ranks=auto` or `=2`
            members = [_trait(name, a, help_) for a in inner]
            return Union(members, **kw).tag(config=True)
        return _trait(name, inner[0], help_)
    trait: TraitType[Any, Any]
    if is_byte_field(name):  # 8589934592 or "8G"
        trait = Union([Integer(), Unicode()], **kw)
    elif origin is Literal:
        trait = Enum(list(get_args(annotation)), **kw)
    elif annotation is bool:
        trait = Bool(**kw)
    elif annotation is int:
        trait = Integer(**kw)
    elif annotation is float:
        trait = Float(**kw)
    elif annotation in (str, Path):
        trait = Unicode(**kw)
    elif origin is list:
        trait = _StrList(Unicode(), **kw)
    else:
        raise TypeError(f"no trait for Settings.{name}: {annotation!r}")
    return trait.tag(config=True)


def _settings_traits() -> dict[str, TraitType[Any, Any]]:
    hints = typing.get_type_hints(Settings)
    taken = set(ExtensionApp.class_trait_names())
    clash = taken.intersection(Settings.model_fields)
    if clash:  # a field named like a trait of ExtensionApp would silently replace it
        raise TypeError(f"Settings fields clash with ExtensionApp traits: {sorted(clash)}")
    return {
        name: _trait(name, hints[name], field.description or name)
        for name, field in Settings.model_fields.items()
        if not serve_only(name)
    }


SETTINGS_TRAITS: dict[str, TraitType[Any, Any]] = _settings_traits()

if TYPE_CHECKING:

    class SettingsTraits:  # what mypy sees: the traits are read back with getattr
        pass

else:
    # a mixin holding the generated traits (made by traitlets' metaclass, which sets them up);
    # ImpetusExtension inherits them as its own config
    SettingsTraits = type(HasTraits)("SettingsTraits", (HasTraits,), dict(SETTINGS_TRAITS))


class ImpetusExtension(SettingsTraits, ExtensionApp):
    name = "impetus"
    description = "impetus: OpenAI-compatible API and MLX engine inside Jupyter"
    load_other_extensions = True

    service: ImpetusService | None = None

    def build_settings(self) -> Settings:
        """Settings from the traits that are set, over IMPETUS_*, the config file, the defaults;
        a bad value raises SettingsError naming the trait, variable or file it came from."""
        values: dict[str, Any] = {name: getattr(self, name) for name in SETTINGS_TRAITS}
        # serve's listener settings do not apply in Jupyter: pin them, so that no variable
        # (IMPETUS_API_KEY, meant for clients) turns into a full-access key of this server
        for name, field in Settings.model_fields.items():
            if serve_only(name):
                values[name] = field.get_default(call_default_factory=True)
        return Settings.load(values, origin=lambda name: f"ImpetusExtension.{name}")

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        self.service = ImpetusService(self.build_settings())
        prefix = url_path_join(self.serverapp.base_url, PREFIX)
        self.settings.update(
            {SERVICE_KEY: self.service, "impetus_prefix": prefix, ROUTES_SETTING: ROUTES}
        )
        self.log.info("impetus: OpenAI API under %sv1", prefix)

    def initialize_handlers(self) -> None:
        self.handlers.extend(build_handlers(PREFIX))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        # lazy by default (`auto`): the first API request, widget or sidebar action that needs
        # the engine starts it (ImpetusService.ensure_engine), or the sidebar's Start button
        if self.service is not None and self.service.settings.engine_start == "eager":
            self.service.start_background()

    async def stop_extension(self) -> None:
        if self.service is not None:
            await self.service.close()
