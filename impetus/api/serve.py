"""`impetus serve`: the OpenAI API (and admin / ops endpoints) without Jupyter.

Every setting is a flag here (`--max-queue` sets `max_queue`; `--model` and `--api-key` repeat),
an environment variable (`IMPETUS_MAX_QUEUE`; `IMPETUS_API_KEY` for the keys, lists
comma-separated) and a key of the TOML settings file (`max_queue = 64`, the file from
`--settings-file`, `IMPETUS_SETTINGS_FILE` or $XDG_CONFIG_HOME/impetus/settings.toml). Precedence:
flag > environment > settings file > default. Sizes take units (512M, 8G); a boolean flag alone
means true, `--flag=false` turns it off. Without a key `impetus serve` refuses to start, unless
it listens on a loopback address with `--no-auth`. `--certfile` (and `--keyfile`) serve HTTPS
instead of HTTP.

SIGTERM (or SIGINT): stop accepting connections, answer 503 to new requests on open ones, let
requests in flight finish within `--shutdown-grace` seconds, cancel what is left, stop the
engine, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from impetus.config import Settings, SettingsError, env_name, is_byte_field, parse_size
from impetus.engine import distributed

log = logging.getLogger("impetus.serve")

# Settings fields with a flag name of their own (list fields take one value per flag)
RENAMED = {"models": "--model", "api_keys": "--api-key"}
METAVARS = {
    "models": "MODEL",
    "api_keys": "KEY",
    "home": "DIR",
    "model_dir": "DIR",
    "settings_file": "FILE",
    "certfile": "FILE",
    "keyfile": "FILE",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def flag_name(field: str) -> str:
    return RENAMED.get(field, "--" + field.replace("_", "-"))


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bool_arg(text: str) -> bool:
    if text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (true or false)")


def _flag_type(name: str, annotation: Any) -> dict[str, Any]:
    if is_byte_field(name):
        return {"type": _size_arg, "metavar": "SIZE"}
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) > 1:  # a word or a number (ranks: auto or N): Settings validates the text
            words = [w for a in inner if get_origin(a) is Literal for w in get_args(a)]
            return {"type": str, "metavar": "|".join([*words, *(["N"] if int in inner else [])])}
        return _flag_type(name, inner[0])
    if origin is Literal:
        return {"choices": list(get_args(annotation))}
    if annotation is bool:
        # `--no-auth` alone is true; `--no-auth=false` overrides a true from the env or the file
        return {"nargs": "?", "const": True, "type": _bool_arg, "metavar": "BOOL"}
    if annotation in (int, float, str, Path):
        return {"type": annotation}
    if origin is list:
        return {"action": "append", "type": str}
    raise TypeError(f"no flag for Settings.{name}: {annotation!r}")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve the OpenAI-compatible API (no Jupyter needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(Settings)
    for name, field in Settings.model_fields.items():
        kwargs = _flag_type(name, hints[name])
        kwargs.setdefault("default", None)  # None: not given, the env / file / default decide
        if name in METAVARS:
            kwargs["metavar"] = METAVARS[name]
        help_ = field.description or ""
        if get_origin(hints[name]) is list:
            help_ += " (repeatable)"
        help_ += f" [env {env_name(name)}]"
        help_ = help_.replace("%", "%%")  # argparse formats help strings with %
        p.add_argument(flag_name(name), dest=name, help=help_, **kwargs)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags over IMPETUS_* over the settings file over the defaults; SettingsError names the
    flag, variable or file of a bad value."""
    values = {name: getattr(args, name, None) for name in Settings.model_fields}
    return Settings.load(values, origin=flag_name)


def check_auth(settings: Settings) -> str | None:
    """Why these settings must not serve, or None."""
    from impetus.api.auth import is_loopback

    if settings.no_auth:
        if settings.api_keys:
            return "--no-auth and --api-key/IMPETUS_API_KEY contradict each other; pick one"
        if not is_loopback(settings.host):
            return f"--no-auth is only allowed on a loopback address, not {settings.host!r}"
        return None
    if not settings.api_keys:
        return "refusing to serve without an API key: pass --api-key KEY (or set IMPETUS_API_KEY), or --no-auth on a loopback address"
    return None


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context from --certfile/--keyfile (None: plain HTTP).

    Raises ValueError with a message fit for the command line: a key without a certificate, an
    unreadable file, a key that does not match the certificate."""
    if settings.certfile is None:
        if settings.keyfile is not None:
            raise ValueError("--keyfile needs --certfile")
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.certfile, settings.keyfile)
    except FileNotFoundError as e:
        raise ValueError(f"cannot read {e.filename}: no such file") from e
    except PermissionError as e:
        raise ValueError(f"cannot read {e.filename}: permission denied") from e
    except ssl.SSLError as e:
        files = str(settings.certfile) + (f" / {settings.keyfile}" if settings.keyfile else "")
        raise ValueError(f"not a usable certificate and key ({files}): {e.reason or e}") from e
    return ctx


def instance_name(setting: str, port: int) -> str:
    """The X-Impetus-Instance value: `auto` names the host and the port that was bound (two
    replicas on one host differ by port; a Kubernetes pod's host name is the pod's name)."""
    return f"{socket.gethostname()}:{port}" if setting == "auto" else setting


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = settings_from_args(args)
    except SettingsError as e:
        print(f"impetus serve: invalid settings: {e}", file=sys.stderr)
        return 2
    try:
        distributed.check_settings(settings)
    except ValueError as e:
        print(f"impetus serve: {e}", file=sys.stderr)
        return 2
    if distributed.launched_rank():
        # a rank other than 0 of a group started by mlx.launch: rank 0 serves HTTP, this
        # process is only its engine's follower
        argv = distributed.follower_argv(settings)
        os.execve(argv[0], argv, settings.env_for_engine())
    problem = check_auth(settings)
    if problem:
        print(f"impetus serve: {problem}", file=sys.stderr)
        return 2
    try:
        tls = tls_context(settings)
    except ValueError as e:
        print(f"impetus serve: TLS: {e}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings, tls))


async def serve(settings: Settings, tls: ssl.SSLContext | None = None) -> int:
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from impetus.api.app import make_app
    from impetus.api.base import INSTANCE_SETTING
    from impetus.api.service import ImpetusService

    service = ImpetusService(settings)
    app = make_app(service)
    # Body limits are enforced per request by the handlers (413 in OpenAI's shape); the server's
    # own cap only has to be above them.
    server = HTTPServer(
        app,
        xheaders=True,
        max_body_size=4 * settings.max_body_bytes + (1 << 20),
        ssl_options=tls,
    )
    try:
        sockets = bind_sockets(settings.port, settings.host)
    except OSError as e:
        print(
            f"impetus serve: cannot listen on {settings.host}:{settings.port}: {e}", file=sys.stderr
        )
        return 1
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    app.settings[INSTANCE_SETTING] = instance_name(settings.instance_id, port)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    scheme = "https" if tls is not None else "http"
    service.endpoint = f"{scheme}://{host}:{port}/v1"
    if settings.engine_start != "lazy":  # `auto` is eager for a standalone server
        service.start_background()
    print(
        f"impetus serve: listening on {scheme}://{host}:{port}/ (OpenAI base URL {service.endpoint})",
        flush=True,
    )

    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("received %s: draining", signal.Signals(signum).name)
            stop.set()
        else:  # a second signal: do not wait for the grace period
            log.warning("second signal: cancelling the requests in flight")
            service.abort_all("shutdown")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()

    server.stop()  # no new connections
    in_flight = service.in_flight
    if in_flight:
        log.info(
            "waiting up to %g s for %d request(s) in flight", settings.shutdown_grace, in_flight
        )
    if not await service.drain(settings.shutdown_grace):
        n = service.abort_all("shutdown")
        log.warning("grace period over: cancelled %d request(s)", n)
        await service.drain(5.0)
    log.debug("closing connections")
    try:
        await asyncio.wait_for(server.close_all_connections(), timeout=5.0)
    except TimeoutError:
        log.warning("some connections did not close")
    log.debug("stopping the engine")
    await service.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m impetus.api.serve ...`: the same command as `impetus serve ...`."""
    parser = argparse.ArgumentParser(prog="impetus")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
