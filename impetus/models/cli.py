"""`impetus models list | pull ID [--load] | info ID | rm ID | load ID | unload ID | ps`.

list / pull / info / rm work on this machine's registry (no server needed); load / unload / ps
(and `pull --load`) ask a running impetus server, found through `--url` / `IMPETUS_URL` or the Jupyter
server of this kernel. `--json` prints machine-readable output (`info ID --json` includes `path`,
the MLX folder other tools such as `mlx_lm.server --model PATH` can use).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, overload

from impetus.config import Settings, migrate_legacy_home
from impetus.models.errors import ModelError
from impetus.models.types import PullProgress, RegistryEntry
from impetus.protocol import ModelState, to_builtins

if (
    TYPE_CHECKING
):  # the client (httpx, the api's schemas) is imported only by commands that call a server
    from impetus.client import ImpetusClient


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from impetus.cli import documented_parser

    p = documented_parser(
        subparsers, "models", __doc__, "list, download, inspect, remove, load and unload models"
    )

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)
    sub = p.add_subparsers(dest="models_command", metavar="{list,pull,info,rm,load,unload,ps}")

    def common(q: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
        q.add_argument(
            "--model-dir",
            type=Path,
            default=None,
            help="model directory (default: IMPETUS_HOME/models, else $XDG_CACHE_HOME/impetus/models)",
        )
        if json_flag:
            q.add_argument("--json", action="store_true", help="machine-readable output")

    def server(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--url",
            default=None,
            help="impetus server base URL (default: IMPETUS_URL or this Jupyter server)",
        )
        q.add_argument(
            "--api-key", default=None, help="API key for --url (default: IMPETUS_API_KEY)"
        )

    q = sub.add_parser("list", help="models available on this machine")
    common(q)
    q.add_argument(
        "--backend",
        choices=["cpu", "cuda", "metal"],
        default=None,
        help="backend the memory estimates assume",
    )
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("pull", help="download / install and convert a model")
    q.add_argument(
        "id",
        help="smollm2-135m, minilm, ORG/NAME on the hub, or a GGUF name in the model directory",
    )
    q.add_argument("--load", action="store_true", help="then load it in the running server")
    common(q)
    server(q)
    q.set_defaults(func=cmd_pull)

    q = sub.add_parser("info", help="details of one model")
    q.add_argument("id")
    common(q)
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("rm", help="delete a downloaded or converted model")
    q.add_argument("id")
    common(q)
    q.set_defaults(func=cmd_rm)

    for name, help_ in (
        ("load", "load a model in the running server"),
        ("unload", "unload a model from the running server"),
    ):
        q = sub.add_parser(name, help=help_)
        q.add_argument("id")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        server(q)
        if name == "load":
            q.add_argument(
                "--dtype",
                default=None,
                help="serving dtype (auto, native, float32, bfloat16, float16)",
            )
            q.add_argument(
                "--keep-alive",
                type=float,
                default=None,
                help="seconds idle before unloading (<0: never)",
            )
        q.set_defaults(func=cmd_load if name == "load" else cmd_unload)

    q = sub.add_parser(
        "ps", help="models loaded in the running server: memory, dtype, keep-alive expiry"
    )
    q.add_argument("--json", action="store_true", help="machine-readable output")
    server(q)
    q.set_defaults(func=cmd_ps)
    return p


def _settings(args: argparse.Namespace) -> Settings:
    model_dir = getattr(args, "model_dir", None)
    settings = Settings(model_dir=model_dir) if model_dir else Settings()
    migrate_legacy_home(settings)  # models in the old single folder move to the cache one
    return settings


def _fail(e: Exception, as_json: bool) -> int:
    code = getattr(e, "code", None) or type(e).__name__
    message = getattr(e, "message", None) or str(e)
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}))
    else:
        print(f"error ({code}): {message}", file=sys.stderr)
    return 130 if code == "cancelled" else 1


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def cmd_list(args: argparse.Namespace) -> int:
    from impetus.models import registry

    try:
        entries = registry.list_entries(_settings(args), backend=args.backend)
    except ModelError as e:
        return _fail(e, args.json)
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return 0
    rows = [["ID", "KIND", "SOURCE", "ARCH", "PARAMS", "QUANT", "DISK", "MEMORY", "CTX", "READY"]]
    for m in entries:
        rows.append([
            m.id, m.kind, m.source, m.architecture or "-", human_count(m.parameters), m.quantization or "-",
            human_bytes(m.size_bytes), f"{human_bytes(m.memory_bytes)} {m.serving_dtype or ''}".strip(),
            str(m.context_length or "-"), "yes" if m.downloaded else "pull",
        ])  # fmt: skip
    _table(rows, sys.stdout)
    return 0


def _describe(e: RegistryEntry) -> list[tuple[str, str]]:
    return [
        ("id", e.id),
        ("kind", e.kind),
        ("source", e.source),
        ("description", e.description or "-"),
        ("architecture", e.architecture or "-"),
        ("parameters", f"{e.parameters:,}" if e.parameters else "-"),
        ("quantization", e.quantization or "none"),
        ("size on disk", human_bytes(e.size_bytes)),
        ("memory when loaded", f"{human_bytes(e.memory_bytes)} ({e.serving_dtype})"),
        ("context length", str(e.context_length or "-")),
        ("downloaded", "yes" if e.downloaded else "no"),
        ("path", e.path or "- (pull or load it to convert)"),
        ("source file", e.source_path or "-"),
    ]


def cmd_info(args: argparse.Namespace) -> int:
    from impetus.models import registry

    try:
        entry = registry.describe(args.id, _settings(args))
    except ModelError as e:
        return _fail(e, args.json)
    if args.json:
        print(json.dumps(entry.model_dump(mode="json"), indent=2))
    else:
        width = max(len(k) for k, _ in _describe(entry))
        for k, v in _describe(entry):
            print(f"{k.ljust(width)}  {v}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from impetus.models import registry

    loaded: list[str] = []
    try:  # refuse to delete what a running server has loaded, when one is reachable
        client = _client(args, required=False)
        if client is not None:
            with client:
                loaded = [m.id for m in client.status().models]
    except Exception:  # no server (or an old one): nothing is loaded there
        loaded = []
    try:
        res = registry.delete(args.id, _settings(args), loaded=loaded)
    except ModelError as e:
        return _fail(e, args.json)
    if args.json:
        print(json.dumps(res.model_dump(mode="json")))
    else:
        print(f"removed {res.id}: {human_bytes(res.freed_bytes)} freed")
        for p in res.removed:
            print(f"  {p}")
    return 0


class _Bar:
    """A tqdm bar fed by PullProgress events (bytes), with status lines for the other phases."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, ev: PullProgress) -> None:
        from tqdm import tqdm

        if ev.status == "downloading" and ev.bytes_total:
            if self.bar is None:
                self.bar = tqdm(
                    total=ev.bytes_total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=ev.id,
                    file=sys.stderr,
                )
            self.bar.total = ev.bytes_total
            self.bar.n = ev.bytes_done
            if ev.file:
                self.bar.set_postfix_str(ev.file, refresh=False)
            self.bar.refresh()
            return
        self.close()
        if ev.message and ev.status not in ("error", "cancelled"):
            print(f"{ev.status}: {ev.message}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_pull(args: argparse.Namespace) -> int:
    from impetus.models import registry

    client = None
    if args.load:
        try:
            client = _client(args, required=True)
        except ModelError as e:
            return _fail(e, args.json)

    def json_line(ev: PullProgress) -> None:
        print(json.dumps(ev.model_dump(mode="json")), flush=True)

    bar = _Bar()
    cancel = threading.Event()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["model"] = registry.pull(
                args.id, _settings(args), progress=json_line if args.json else bar, cancel=cancel
            )
        except BaseException as e:  # handed to the main thread
            result["error"] = e

    # the pull runs in a thread so that Ctrl-C here sets `cancel` and the download stops cleanly
    worker = threading.Thread(target=work, name="impetus-pull", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        worker.join()
    bar.close()
    if "error" in result:
        err = result["error"]
        if isinstance(err, ModelError):
            return _fail(err, args.json)
        raise err
    resolved = result["model"]
    if not args.json:
        print(f"{resolved.id}: {resolved.path}")
    if client is not None:
        with client:
            try:
                state = client.load(resolved.id)
            except Exception as e:  # ImpetusError / ServerUnavailable
                return _fail(e, args.json)
        if args.json:
            print(json.dumps({"loaded": to_builtins(state)}))
        else:
            print(f"loaded {state.id} in {client.endpoint.base_url}")
    return 0


@overload
def _client(args: argparse.Namespace, *, required: Literal[True]) -> ImpetusClient: ...
@overload
def _client(args: argparse.Namespace, *, required: bool) -> ImpetusClient | None: ...
def _client(args: argparse.Namespace, *, required: bool) -> ImpetusClient | None:
    """An ImpetusClient for --url / IMPETUS_URL / this Jupyter server; never starts a server."""
    from impetus.client import Endpoint, ImpetusClient, ServerUnavailable, find_endpoint

    url = getattr(args, "url", None)
    if url:
        return ImpetusClient(endpoint=Endpoint(url, getattr(args, "api_key", None)))
    try:
        endpoint = find_endpoint(start=False)
    except ServerUnavailable as e:
        if not required:
            return None
        raise ModelError(
            "invalid_request",
            "this needs a running impetus server: pass --url URL (and --api-key KEY) or set IMPETUS_URL",
        ) from e
    if getattr(args, "api_key", None):
        endpoint.api_key = args.api_key
    return ImpetusClient(endpoint=endpoint)


def cmd_load(args: argparse.Namespace) -> int:
    try:
        client = _client(args, required=True)
        with client:
            state = client.load(args.id, dtype=args.dtype, keep_alive=args.keep_alive)
    except Exception as e:  # ModelError, ImpetusError, ServerUnavailable
        return _fail(e, args.json)
    if args.json:
        print(json.dumps(to_builtins(state)))
    else:
        print(f"loaded {state.id} ({state.dtype}, {human_bytes(state.memory_bytes)})")
    return 0


def cmd_unload(args: argparse.Namespace) -> int:
    try:
        client = _client(args, required=True)
        with client:
            res = client.unload(args.id)
    except Exception as e:  # ModelError, ImpetusError, ServerUnavailable
        return _fail(e, args.json)
    print(res.model_dump_json() if args.json else f"unloaded {args.id}")
    return 0


def expires_at(model: ModelState) -> float | None:
    """When an idle model unloads (last use + keep-alive); None: never (pinned, no keep-alive)."""
    if model.pinned or model.keep_alive is None or model.keep_alive < 0:
        return None
    return model.last_used + model.keep_alive


def until(model: ModelState, now: float) -> str:
    """When an idle model unloads, in Ollama's words: "forever", "in use" (never while serving),
    or "4 minutes from now" (last use + keep-alive)."""
    at = expires_at(model)
    if at is None:
        return "forever"
    if model.active_requests:
        return "in use"
    left = at - now
    if left <= 0:
        return "now"
    if left < 90:
        return f"{left:.0f} seconds from now"
    if left < 5400:
        return f"{left / 60:.0f} minutes from now"
    return f"{left / 3600:.1f} hours from now"


def cmd_ps(args: argparse.Namespace) -> int:
    import time

    try:
        client = _client(args, required=True)
        with client:
            status = client.status()
    except Exception as e:  # ModelError, ImpetusError, ServerUnavailable
        return _fail(e, args.json)
    models = status.models
    now = time.time()
    if args.json:
        print(json.dumps([{**to_builtins(m), "expires_at": expires_at(m)} for m in models]))
        return 0
    if status.state != "ready":
        print(f"the engine is {status.state} (no model loaded)")
        return 0
    rows = [["NAME", "KIND", "SIZE", "DTYPE", "CONTEXT", "UNTIL"]]
    for m in models:
        rows.append(
            [
                m.id,
                m.kind,
                human_bytes(m.memory_bytes),
                m.dtype,
                str(m.context_length),
                until(m, now),
            ]
        )
    _table(rows, sys.stdout)
    budget = status.memory_budget
    used = sum(m.memory_bytes for m in models)
    if budget:
        print(f"\n{human_bytes(used)} of the {human_bytes(budget)} memory budget in use")
    return 0
