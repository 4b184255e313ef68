"""The jupyter_server extension: the impetus API under `{base_url}impetus/`, engine supervised here.

Enabled on install through `etc/jupyter/jupyter_server_config.d/impetus.json`. Configure it like
any Jupyter app (`c.ImpetusExtension.models = ["smollm2-135m"]` in jupyter_server_config.py, or
`--ImpetusExtension.models=...` on the command line); each trait maps onto the field of the same
name in `impetus.config.Settings`, and an unset trait keeps the Settings default (which honours
the IMPETUS_* environment variables).

Authentication is Jupyter's (token as `Authorization: Bearer`, or the browser session) plus the
inference-only API keys of `admin/keys`.
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Bool, Enum, Float, Integer, List, Unicode

from impetus.api.base import SERVICE_KEY
from impetus.api.routes import build_handlers
from impetus.api.service import ImpetusService
from impetus.config import Settings

PREFIX = "impetus/"

# trait name -> Settings field (same names; the traits below must stay in step with Settings)
SETTINGS_TRAITS = (
    "home",
    "model_dir",
    "models",
    "dtype",
    "memory_budget",
    "keep_alive",
    "max_batch",
    "prefill_batch",
    "prefill_step",
    "prompt_cache_bytes",
    "max_queue",
    "max_tokens_default",
    "request_timeout",
    "max_body_bytes",
    "blas",
    "engine_start_timeout",
)


def _doc(field: str) -> str:
    return Settings.model_fields[field].description or field


class ImpetusExtension(ExtensionApp):
    name = "impetus"
    description = "impetus: OpenAI-compatible API and MLX engine inside Jupyter"
    load_other_extensions = True

    home = Unicode(None, allow_none=True, help=_doc("home")).tag(config=True)
    model_dir = Unicode(None, allow_none=True, help=_doc("model_dir")).tag(config=True)
    models = List(Unicode(), default_value=None, allow_none=True, help=_doc("models")).tag(
        config=True
    )
    dtype = Enum(
        ["auto", "native", "float32", "bfloat16", "float16"],
        None,
        allow_none=True,
        help=_doc("dtype"),
    ).tag(config=True)
    memory_budget = Integer(None, allow_none=True, help=_doc("memory_budget")).tag(config=True)
    keep_alive = Float(None, allow_none=True, help=_doc("keep_alive")).tag(config=True)
    max_batch = Integer(None, allow_none=True, help=_doc("max_batch")).tag(config=True)
    prefill_batch = Integer(None, allow_none=True, help=_doc("prefill_batch")).tag(config=True)
    prefill_step = Integer(None, allow_none=True, help=_doc("prefill_step")).tag(config=True)
    prompt_cache_bytes = Integer(None, allow_none=True, help=_doc("prompt_cache_bytes")).tag(
        config=True
    )
    max_queue = Integer(None, allow_none=True, help=_doc("max_queue")).tag(config=True)
    max_tokens_default = Integer(None, allow_none=True, help=_doc("max_tokens_default")).tag(
        config=True
    )
    request_timeout = Float(None, allow_none=True, help=_doc("request_timeout")).tag(config=True)
    max_body_bytes = Integer(None, allow_none=True, help=_doc("max_body_bytes")).tag(config=True)
    blas = Enum(["auto", "off"], None, allow_none=True, help=_doc("blas")).tag(config=True)
    engine_start_timeout = Float(None, allow_none=True, help=_doc("engine_start_timeout")).tag(
        config=True
    )

    start_engine = Bool(
        True, help="start the engine process when the server starts (else on the first request)"
    ).tag(config=True)

    service: ImpetusService | None = None

    def build_settings(self) -> Settings:
        values: dict[str, Any] = {}
        for name in SETTINGS_TRAITS:
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        if "models" in values:
            values["models"] = _model_list(values["models"])
        return Settings(**values)

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        self.service = ImpetusService(self.build_settings())
        prefix = url_path_join(self.serverapp.base_url, PREFIX)
        self.settings.update({SERVICE_KEY: self.service, "impetus_prefix": prefix})
        self.log.info("impetus: OpenAI API under %sv1", prefix)

    def initialize_handlers(self) -> None:
        self.handlers.extend(build_handlers(PREFIX))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.start_engine and self.service is not None:
            self.service.start_background()

    async def stop_extension(self) -> None:
        if self.service is not None:
            await self.service.close()


def _model_list(items: list[str]) -> list[str]:
    """Model ids however they came: a config list, `--ImpetusExtension.models=a,b`, or a JSON list
    on the command line (the server app parses a foreign extension's flags as plain strings)."""
    out: list[str] = []
    for item in items:
        item = item.strip()
        if item.startswith("["):
            out.extend(str(x) for x in json.loads(item))
        else:
            out.extend(x.strip() for x in item.split(",") if x.strip())
    return out
