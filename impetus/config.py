"""One settings object for the whole of impetus, and where its values come from.

Every field of `Settings` is a setting with one name everywhere: the `impetus serve` flag
(`--max-queue`), the Jupyter trait (`c.ImpetusExtension.max_queue`), the environment variable
(`IMPETUS_MAX_QUEUE`) and the key of the settings file (`max_queue = 64`). One precedence for
all of them, highest first:

1. what the caller passes: `impetus serve` flags, or the extension's traits when set;
2. environment variables `IMPETUS_<FIELD>` (lists comma-separated or a JSON list);
3. the settings file (TOML, flat `field = value`): `--settings-file` / `IMPETUS_SETTINGS_FILE`, else
   `$XDG_CONFIG_HOME/impetus/settings.toml` (`~/.config/...`) when it exists;
4. the defaults below.

pydantic-settings does the layering; `Settings.load` adds an error message that names where a
bad value came from. docs/configuration.md is the user-facing page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
import psutil
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "ENV_PREFIX",
    "DType",
    "Settings",
    "SettingsError",
    "default_cache_dir",
    "default_data_dir",
    "default_settings_file",
    "env_name",
    "is_byte_field",
    "memory_fraction",
    "migrate_legacy_home",
    "parse_size",
    "serve_only",
]

DType = Literal["auto", "native", "float32", "bfloat16", "float16"]
ENV_PREFIX = "IMPETUS_"
# env names kept from before the settings had one source (clients read IMPETUS_API_KEY too)
ENV_NAMES = {"api_keys": "IMPETUS_API_KEY"}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


class SettingsError(ValueError):
    """A setting has a bad value, or the settings file is unreadable; the message says where."""


def parse_size(text: str) -> int:
    """'8M', '1.5GiB', '4096' -> bytes (powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 512M, 8G)")
    unit = (m.group(2) or "b")[0].lower()
    return int(float(m.group(1)) * 1024 ** "bkmgt".index(unit))


def _size(value: Any) -> Any:
    return parse_size(value) if isinstance(value, str) else value


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


BYTES = _Marker("BYTES")  # a byte count: also accepts '512M', '8G' (flags, env, file, traits)
SERVE_ONLY = _Marker("SERVE_ONLY")  # the HTTP listener of `impetus serve`; Jupyter has its own

Bytes = Annotated[int, BeforeValidator(_size), BYTES]


def _split_list(value: Any) -> Any:
    """A list however it came: a JSON list, 'a,b' (env, a Jupyter command-line flag), or a list
    whose items are such strings (`--ImpetusExtension.models=a,b` arrives as ['a,b'])."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return value
    out: list[Any] = []
    for item in value:
        if not isinstance(item, str):
            out.append(item)
            continue
        item = item.strip()
        if item.startswith("["):
            try:
                out.extend(json.loads(item))
            except json.JSONDecodeError as e:
                raise ValueError(f"not a JSON list: {item!r} ({e})") from None
        else:
            out.extend(x.strip() for x in item.split(",") if x.strip())
    return out


StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]


def memory_fraction() -> float:
    """The share of a memory that loaded models may take ($IMPETUS_MEMORY_FRACTION, 0.6): of the
    machine's RAM for the default budget, of one GPU when `ranks = "auto"` weighs a model."""
    return float(os.environ.get("IMPETUS_MEMORY_FRACTION", 0.6))


def default_memory_budget() -> int:
    """A fraction of the machine's memory that loaded models may take (weights + KV cache)."""
    return int(psutil.virtual_memory().total * memory_fraction())


def default_data_dir() -> Path:
    """Keys and benchmark history: the user data folder ($XDG_DATA_HOME/impetus on Linux)."""
    return Path(platformdirs.user_data_dir("impetus", appauthor=False))


def default_cache_dir() -> Path:
    """Models and conversions, which can be fetched or made again: the user cache folder."""
    return Path(platformdirs.user_cache_dir("impetus", appauthor=False))


def legacy_home() -> Path:
    """Where everything lived before data and cache were apart (the old default IMPETUS_HOME).
    Read from HOME at each call, as the data and cache folders are: a process whose HOME
    changes (a test with a temporary HOME) must not reach into another home's folders."""
    return Path.home() / ".cache" / "impetus"


LEGACY_DATA_FILES = ("api_keys.json", "bench.sqlite")


def migrate_legacy_home(settings: Settings, legacy: Path | None = None) -> list[str]:
    """Move the old single-folder layout (keys, bench db and models under ~/.cache/impetus)
    into the data and cache folders, once; returns what moved. Only for the default locations:
    an IMPETUS_HOME set by the user is that user's layout. Nothing is overwritten."""
    legacy = legacy_home() if legacy is None else legacy
    if "home" in settings.model_fields_set or not legacy.is_dir():
        return []
    moved: list[str] = []
    pairs = [(legacy / name, settings.home / name) for name in LEGACY_DATA_FILES]
    pairs.append((legacy / "models", settings.models_path))
    for old, new in pairs:
        if not old.exists() or new.exists() or old.resolve() == new.resolve():
            continue
        new.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(old), str(new))
        moved.append(f"{old} -> {new}")
    return moved


def default_settings_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "impetus" / "settings.toml"


def settings_file_path(
    overrides: Mapping[str, Any], environ: Mapping[str, str | None]
) -> tuple[Path, bool]:
    """(the settings file, whether it was asked for): a missing default file is no error."""
    given = overrides.get("settings_file") or {k.upper(): v for k, v in environ.items()}.get(
        "IMPETUS_SETTINGS_FILE"
    )
    if given:
        return Path(given).expanduser(), True
    return default_settings_file(), False


def env_name(field: str) -> str:
    return ENV_NAMES.get(field, ENV_PREFIX + field.upper())


def is_byte_field(field: str) -> bool:
    return BYTES in Settings.model_fields[field].metadata


def serve_only(field: str) -> bool:
    extra = Settings.model_fields[field].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("serve_only"))


def _serve(**kw: Any) -> Any:
    return Field(json_schema_extra={"serve_only": True}, **kw)


class Settings(BaseSettings):
    """Every knob of the engine and the api layer. See the module docstring for the sources."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",  # a misspelt key in the settings file is an error, not silently ignored
        validate_default=True,
    )

    settings_file: Path | None = Field(
        None,
        description="TOML file of settings (default: $XDG_CONFIG_HOME/impetus/settings.toml if it exists)",
        exclude=True,  # already read: the engine process gets the merged values
    )
    home: Path = Field(
        default_factory=default_data_dir,
        description="impetus data: API keys, benchmark history "
        "(default: the user data folder, $XDG_DATA_HOME/impetus)",
    )
    model_dir: Path | None = Field(
        None,
        description="where converted models and your own MLX folders live; hub downloads go to the "
        "Hugging Face cache (default: HOME/models when HOME is set, else the user cache folder, "
        "$XDG_CACHE_HOME/impetus/models)",
    )
    models: StrList = Field(default_factory=list, description="models to load at start-up")
    dtype: DType = Field(
        "auto", description="serving dtype: auto picks the fastest for the backend"
    )
    memory_budget: Bytes = Field(
        default_factory=default_memory_budget,
        ge=0,
        description="bytes loaded models may use (default: 60% of RAM, $IMPETUS_MEMORY_FRACTION)",
    )
    keep_alive: float = Field(
        300.0, description="seconds an idle, unpinned model stays loaded (<0: forever)"
    )
    max_batch: int = Field(64, ge=1, description="sequences decoded together")
    prefill_batch: int = Field(8, ge=1, description="prompts prefilled together")
    prefill_step: int = Field(
        512, ge=16, description="prompt tokens per engine step (chunked prefill)"
    )
    prompt_cache_bytes: Bytes = Field(1 << 30, ge=0, description="bytes of KV cache kept for reuse")
    max_queue: int = Field(512, ge=1, description="requests waiting or running before 429")
    max_tokens_default: int = Field(4096, ge=1, description="max_tokens when a request sets none")
    request_timeout: float = Field(600.0, gt=0, description="seconds a request may run")
    max_body_bytes: Bytes = Field(8 << 20, ge=1, description="largest request body")
    sse_keepalive: float = Field(
        5.0,
        gt=0,
        description="seconds between SSE keepalive comments while a stream waits for its first "
        "token (queue, prefill), so that proxies with idle timeouts keep the connection",
    )
    allow_model_paths: bool = Field(
        False,
        description="requests may name any model folder on disk by its path (admin loads always may)",
    )
    blas: str = Field(
        "auto",
        description="optimized BLAS for the engine on Linux CPU: auto, off, or a library path",
    )
    engine_start_timeout: float = Field(
        120.0, gt=0, description="seconds to wait for the engine process"
    )
    # A restart after a crash is mostly the new process importing MLX, mlx-lm and transformers
    # (seconds; over ten on a busy 2-core machine): a spare that did so waits beside the engine.
    engine_standby: bool = Field(
        True,
        description="keep a spare engine process with its libraries loaded (about 100 MB, no "
        "model), so that a crashed engine is replaced in the time it takes to load the models",
    )
    # One model across several processes with MLX's distributed layer (impetus.engine.distributed)
    # "auto" first: pydantic's smart union then keeps a "2" from a flag or the env an int
    ranks: Literal["auto"] | Annotated[int, Field(ge=1, le=64)] = Field(
        "auto",
        description="engine processes one model is sharded over (tensor parallel), started on "
        "this machine as mlx.launch starts ranks; 1: a single engine process; auto: 1 unless the "
        "start-up models do not fit one CUDA GPU, then the fewest of 2, 4, 8 GPUs they fit "
        "(sharding a model that fits one GPU costs throughput: docs/scale.md)",
    )
    distributed_backend: Literal["auto", "ring", "nccl", "jaccl"] = Field(
        "auto",
        description="MLX distributed backend between the ranks: auto picks nccl on CUDA, "
        "ring otherwise (as mlx.launch does)",
    )
    # On JupyterHub every user's server loads the extension: an MLX process per server, used or
    # not, is what Jupyter's conventions (start kernels on first use) avoid.
    engine_start: Literal["auto", "eager", "lazy"] = Field(
        "auto",
        description="when the engine process starts: eager (with the server), lazy (on the first "
        "request that needs it), auto (lazy inside Jupyter, eager for `impetus serve`)",
    )
    # --- the HTTP listener of `impetus serve` (in Jupyter, the server's own settings apply) ---
    host: str = _serve(default="127.0.0.1", description="address `impetus serve` listens on")
    port: int = _serve(
        default=8000, ge=0, le=65535, description="port `impetus serve` listens on (0: any)"
    )
    # exclude: never serialized, so never on the engine process's command line or in a dump
    api_keys: StrList = _serve(
        default_factory=list,
        repr=False,
        exclude=True,
        description="keys with full access to `impetus serve` (admin included)",
    )
    no_auth: bool = _serve(
        default=False, description="serve without keys (refused unless host is a loopback address)"
    )
    shutdown_grace: float = _serve(
        default=30.0, ge=0, description="seconds in-flight requests get to finish on SIGTERM"
    )
    allow_origin: str = _serve(
        default="", description="CORS: an origin (or *) browsers may call the API from"
    )
    # Behind a proxy with several replicas, which one answered (checking that a conversation
    # stays where its prompt cache is, finding the replica of a slow or failed request).
    instance_id: str = _serve(
        default="auto",
        description="this replica's name, sent as the X-Impetus-Instance response header "
        "(auto: host name and port; empty: no header)",
    )
    # TLS of `impetus serve` itself (behind a reverse proxy, the proxy usually terminates TLS)
    certfile: Path | None = _serve(
        default=None, description="TLS certificate chain (PEM): `impetus serve` answers HTTPS"
    )
    keyfile: Path | None = _serve(
        default=None,
        description="private key (PEM) of --certfile (default: read from the certfile)",
    )

    @model_validator(mode="after")
    def _model_dir(self) -> Settings:
        # Resolved here, not in models_path, so that the engine process (which gets the dumped
        # values, home included) finds the same folder.
        if self.model_dir is None:
            explicit_home = "home" in self.model_fields_set
            self.model_dir = (
                self.home / "models" if explicit_home else default_cache_dir() / "models"
            )
        return self

    @field_validator("blas")
    @classmethod
    def _blas(cls, value: str) -> str:
        if value.lower() in ("auto", "off") or "/" in value or ".so" in value:
            return value
        raise ValueError("must be auto, off, or the path of a BLAS library")

    # ---- sources --------------------------------------------------------------------------

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)
        env = _EnvSource(settings_cls)
        # flag/trait > env > file > default (the defaults are the fields' own)
        return (init_settings, env, _ConfigFileSource(settings_cls, init_settings, env))

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, *, origin: Callable[[str], str] = str
    ) -> Settings:
        """Settings from `overrides` (flags, traits), the environment, the settings file and the
        defaults; a bad value raises SettingsError naming the setting and where it came from
        (`origin(field)` names an override, e.g. its flag)."""
        values = {k: v for k, v in (overrides or {}).items() if v is not None}
        try:
            return cls(**values)
        except ValidationError as e:
            raise SettingsError(_explain(e, values, origin)) from None

    # ---- derived --------------------------------------------------------------------------

    @property
    def models_path(self) -> Path:
        assert self.model_dir is not None  # set by _model_dir
        return self.model_dir

    def env_for_engine(self) -> dict[str, str]:
        env = dict(os.environ)
        env["IMPETUS_HOME"] = str(self.home)
        return env


class _EnvSource(EnvSettingsSource):
    """IMPETUS_<FIELD>, except the few fields whose variable kept an older name (ENV_NAMES)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in ENV_NAMES:
            key = ENV_NAMES[field_name].lower()
            return self.env_vars.get(key), key, False
        return super().get_field_value(field, field_name)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The TOML settings file, below the environment. Its path is itself a setting (settings_file),
    taken from the overrides, then IMPETUS_SETTINGS_FILE; the default path may be absent."""

    def __init__(
        self, settings_cls: type[BaseSettings], init: InitSettingsSource, env: EnvSettingsSource
    ) -> None:
        super().__init__(settings_cls)
        self.init = init
        self.env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path, explicit = settings_file_path(self.init.init_kwargs, self.env.env_vars)
        if not path.is_file():
            if explicit:
                raise SettingsError(f"settings file {path} does not exist")
            return {}
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SettingsError(f"settings file {path}: {e}") from None
        if "settings_file" in data:
            raise SettingsError(
                f"settings file {path}: settings_file cannot be set inside a settings file"
            )
        return data


def _explain(e: ValidationError, overrides: Mapping[str, Any], origin: Callable[[str], str]) -> str:
    """One line per bad setting: which one, where its value came from, what is wrong."""
    path, _ = settings_file_path(overrides, os.environ)
    env_set = {k.upper() for k in os.environ}
    lines = []
    for err in e.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        env = env_name(name)
        if err["type"] == "extra_forbidden":
            where = origin(name) if name in overrides else f"settings file {path}"
            lines.append(f"{where}: unknown setting {name!r}")
            continue
        if name in overrides:
            where = origin(name)
        elif env in env_set:
            where = env
        else:
            where = f"{name} in settings file {path}"
        lines.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)
