"""`impetus bench serve | multiturn | engine | history | show | compare`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from impetus.bench.schema import ProfileSummary, RequestResult, RunRecord

if TYPE_CHECKING:
    from impetus.bench.serve import ServeConfig

Func = Callable[[argparse.Namespace], int]


def _list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list: {exc}") from exc

    return parse


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _store(args: argparse.Namespace) -> Any:
    from impetus.bench.store import ResultStore

    return ResultStore(args.db)


def _print_record(record: RunRecord, args: argparse.Namespace, *, results: bool = False) -> None:
    from impetus.bench.report import format_run

    if args.json:
        print((record if results else record.summary()).model_dump_json(indent=2))
    else:
        print(format_run(record))


class _Progress:
    """A tqdm bar on stderr (none with --quiet or --json), and a line per finished profile."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.quiet = args.quiet or args.json
        self.bar: Any = None

    def progress(self, done: int, total: int) -> None:
        if self.quiet or not sys.stderr.isatty():
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="req", file=sys.stderr, leave=False)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def result(self, result: RequestResult) -> None:
        if self.bar is not None and not result.success:
            self.bar.set_postfix_str("failures!", refresh=False)

    def profile(self, summary: ProfileSummary) -> None:
        if self.quiet:
            return
        line = (
            f"{summary.spec.name}: {summary.completed} ok, {summary.failed} failed, "
            f"{summary.request_throughput:.3g} req/s"
        )
        if summary.output_throughput is not None:
            line += f", {summary.output_throughput:.1f} tok/s"
        if summary.ttft.p50 is not None:
            line += f", TTFT p50 {summary.ttft.p50 * 1000:.1f} ms"
        (self.bar.write if self.bar is not None else print)(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _common_generation(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("endpoint and requests")
    g.add_argument(
        "--base-url", required=True, help="OpenAI base URL, e.g. http://127.0.0.1:8000/v1"
    )
    g.add_argument("--model", required=True, help="model id as the endpoint knows it")
    g.add_argument("--api-key", help="Bearer key (default: $IMPETUS_API_KEY or $OPENAI_API_KEY)")
    g.add_argument("--label", default="", help="name of the endpoint in tables and charts")
    g.add_argument(
        "--tokenizer",
        help="the model's tokenizer: a local folder or an impetus model id (random-token prompts, "
        "and token counts when the endpoint sends no usage)",
    )
    g.add_argument(
        "--prompt-source",
        choices=["auto", "random", "synthetic"],
        default="auto",
        help="random token ids (needs --tokenizer) or synthetic words (auto: random if possible)",
    )
    g.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="don't send ignore_eos (for endpoints that reject unknown parameters)",
    )
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument(
        "--extra-body", type=_json_object, default={}, help="JSON merged into every request body"
    )
    g.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take")
    g.add_argument("--warmup", type=int, default=1, help="requests sent before measuring")
    g.add_argument(
        "--seed",
        type=int,
        help="prompt seed (default: a fresh one per run, so that "
        "prompt caches can't recognise prompts from an earlier run)",
    )


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--db",
        help="result store (default: IMPETUS_HOME/bench.sqlite; IMPETUS_HOME defaults to $XDG_DATA_HOME/impetus)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    _output(p)
    p.add_argument("--no-store", dest="store", action="store_false", help="don't keep the run")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _config_common(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "base_url": args.base_url,
        "model": args.model,
        "api_key": args.api_key,
        "label": args.label,
        "tokenizer": args.tokenizer,
        "prompt_source": args.prompt_source,
        "ignore_eos": args.ignore_eos,
        "temperature": args.temperature,
        "extra_body": args.extra_body,
        "timeout": args.timeout,
        "warmup": args.warmup,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
    }


def _nothing_worked(record: RunRecord) -> bool:
    results = [r for part in record.results for r in part]
    return bool(results) and not any(r.success for r in results)


def _usage_error(command: str, exc: Exception) -> int:
    """Bad input (a tokenizer that isn't there, contradictory options): one line, exit 2."""
    message = (
        str(exc).splitlines()[0]
        if not isinstance(exc, ValidationError)
        else "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    )
    print(f"impetus bench {command}: {message}", file=sys.stderr)
    return 2


def _guarded(command: str, run: Func) -> Func:
    """`run` with bad input (ValidationError, a missing file, a ValueError) as a usage error."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (ValidationError, FileNotFoundError, ValueError) as exc:
            return _usage_error(command, exc)

    return guarded


def _run_load(
    args: argparse.Namespace, run: Callable[..., Any], config: Any, *, profiles: bool = False
) -> int:
    """Run a load benchmark (`run_serve` or `run_multiturn`) with progress on stderr, print
    its record, and exit 1 when no request at all succeeded. `profiles`: the run reports each
    finished profile (only `run_serve` has profiles)."""
    from impetus.bench.serve import run_sync

    progress = _Progress(args)
    try:
        record = run_sync(
            run(
                config,
                on_result=progress.result,
                on_progress=progress.progress,
                store=_store(args) if args.store else None,
                **({"on_profile": progress.profile} if profiles else {}),
            )
        )
    finally:
        progress.close()
    _print_record(record, args)
    return 1 if _nothing_worked(record) else 0


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    from impetus.bench.serve import ServeConfig

    return ServeConfig.model_validate(
        {
            **_config_common(args),
            "concurrency": args.concurrency or [],
            "rates": args.rate or [],
            "sweep": args.sweep,
            "poisson": args.poisson,
            "max_concurrency": args.max_concurrency,
            "requests": args.requests,
            "prompt_tokens": args.prompt_tokens,
        }
    )


def parse_serve_config(argv: list[str]) -> ServeConfig:
    """`impetus bench serve` options (as a list of words) to a ServeConfig, for callers other
    than the command line (the `%impetus bench` magic); bad options raise ValueError."""
    parser = argparse.ArgumentParser(prog="impetus", exit_on_error=False, add_help=False)
    add_parser(parser.add_subparsers(dest="command"))
    try:
        args = parser.parse_args(["bench", "serve", *argv])
    except argparse.ArgumentError as exc:
        raise ValueError(str(exc)) from None
    except SystemExit:  # argparse reports some errors (a missing required option) by exiting
        raise ValueError(f"bad options for bench serve: {' '.join(argv)}") from None
    return _serve_config(args)


def _serve(args: argparse.Namespace) -> int:
    from impetus.bench.serve import run_serve

    return _run_load(args, run_serve, _serve_config(args), profiles=True)


def _multiturn(args: argparse.Namespace) -> int:
    from impetus.bench.serve import MultiTurnConfig, run_multiturn

    config = MultiTurnConfig.model_validate(
        {
            **_config_common(args),
            "conversations": args.conversations,
            "turns": args.turns,
            "concurrency": args.concurrency,
            "first_prompt_tokens": args.first_prompt_tokens,
            "turn_prompt_tokens": args.turn_tokens,
            "cold": args.cold,
            "session_header": args.session_header or None,
        }
    )
    return _run_load(args, run_multiturn, config)


cmd_serve = _guarded("serve", _serve)
cmd_multiturn = _guarded("multiturn", _multiturn)


def cmd_engine(args: argparse.Namespace) -> int:
    from impetus.bench.engine import engine_params, run_engine_bench
    from impetus.protocol import EngineError

    config = engine_params(args)
    quiet = args.quiet or args.json

    def on_trial(side: str, trial: Any) -> None:
        if not quiet:
            print(
                f"{side} trial {trial.trial + 1}: prompt {trial.prompt_tps:.1f} tok/s, "
                f"generation {trial.generation_tps:.1f} tok/s, peak {trial.peak_memory / 2**30:.3f} GiB",
                file=sys.stderr,
            )

    try:
        record = run_engine_bench(
            config, on_trial=on_trial, store=_store(args) if args.store else None
        )
    except EngineError as exc:
        print(f"impetus bench engine: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    _print_record(record, args)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from impetus.bench.report import format_history

    records = _store(args).list(
        kind=args.kind, model=args.model, label=args.label, limit=args.limit
    )
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
    else:
        print(format_history(records))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from impetus.bench.store import RunNotFound

    try:
        record = _store(args).get(args.run, results=args.results)
    except RunNotFound as exc:
        print(f"impetus bench show: {exc}", file=sys.stderr)
        return 1
    _print_record(record, args, results=args.results)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from impetus.bench.report import compare, format_compare
    from impetus.bench.store import RunNotFound

    store = _store(args)
    try:
        a, b = store.get(args.a, results=False), store.get(args.b, results=False)
    except RunNotFound as exc:
        print(f"impetus bench compare: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(compare(a, b), indent=2) if args.json else format_compare(a, b))
    return 0 if a.kind == b.kind else 1


def _value(text: str) -> Any:
    """A -p value: JSON when it parses ([1, 2], 8, true), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_report(args: argparse.Namespace) -> int:
    from impetus.bench.notebook import run_report

    given = {
        "endpoints": args.endpoints,
        "model": args.model,
        "model_path": str(Path(args.model_path).resolve()) if args.model_path else None,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens,
        "trials": args.trials,
        "db_path": str(Path(args.db).resolve()) if args.db else None,
    }
    from impetus.bench.plan import PROFILES, choose_profile, format_plan, this_machine

    machine = this_machine()
    try:
        profile, why = choose_profile(args.profile, machine)
    except ValueError as exc:
        return _usage_error("report", exc)
    # the profile's sizes, then what was given on the command line
    parameters: dict[str, Any] = dict(PROFILES[profile])
    parameters.update({k: v for k, v in given.items() if v is not None})
    parameters.update({name: _value(value) for name, value in args.parameter or []})
    planned = {"endpoints": ["impetus", "mlx_lm"], **parameters}
    try:
        print(format_plan(profile, why, planned, machine), flush=True)
    except (KeyError, TypeError) as exc:  # a -p value of the wrong shape: papermill will say
        print(f"(no estimate: {exc})", flush=True)
    try:
        html, executed = run_report(
            parameters,
            output=args.output,
            executed=args.executed,
            notebook=args.notebook,
            log_output=not args.quiet,
        )
    except FileNotFoundError as exc:
        print(f"impetus bench report: {exc}", file=sys.stderr)
        return 1
    print(f"report: {html}\nexecuted notebook: {executed}")
    return 0


def _load_command(sub: Any, name: str, func: Func, group: str, **text: str) -> Any:
    """A load benchmark's subcommand (serve, multiturn): endpoint and request options, run
    options, and a group of its own, returned for the caller to fill."""
    p = sub.add_parser(name, **text)
    _common_generation(p)
    _run_options(p)
    p.set_defaults(func=func)
    return p.add_argument_group(group)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    bench = subparsers.add_parser(
        "bench",
        help="benchmark an endpoint or the engine; browse stored runs",
        description="Benchmarks whose figures mean something: true token counts, failures counted, "
        "every run stored with its parameters and machine.",
    )
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="COMMAND")

    load = _load_command(
        sub,
        "serve",
        cmd_serve,
        "load",
        help="serving benchmark against an OpenAI-compatible endpoint",
        description="Streaming chat completions at fixed concurrency levels, fixed rates and/or a "
        "sweep (synchronous, max throughput, then rates between). TTFT, TPOT, ITL and e2e as vLLM "
        "defines them. With no --concurrency/--rate/--sweep: concurrency 1 and 4.",
    )
    load.add_argument("--concurrency", type=_list(int), help="closed-loop levels, e.g. 1,2,4,8")
    load.add_argument(
        "--rate", type=_list(float), help="open-loop request rates per second, e.g. 0.5,1"
    )
    load.add_argument(
        "--sweep",
        type=int,
        default=0,
        metavar="N",
        help="synchronous, max throughput, then N rates evenly between them",
    )
    load.add_argument("--poisson", action="store_true", help="Poisson arrivals for rate profiles")
    load.add_argument(
        "--max-concurrency", type=int, help="cap on requests in flight for rates / throughput"
    )
    load.add_argument("--requests", type=int, default=32, help="requests per profile")
    load.add_argument(
        "--prompt-tokens", type=_list(int), default=[256], help="prompt lengths, e.g. 128,1024"
    )
    load.add_argument("--max-tokens", type=int, default=128, help="tokens generated per request")

    conv = _load_command(
        sub,
        "multiturn",
        cmd_multiturn,
        "conversations",
        help="conversations of growing length: what prompt-cache reuse is worth",
        description="Each turn appends the answer and a new user message. Every warm turn is paired "
        "with a cold twin of the same length (a fresh first message), so TTFT per turn shows the "
        "endpoint's prompt-cache reuse.",
    )
    conv.add_argument("--conversations", type=int, default=3)
    conv.add_argument("--turns", type=int, default=4)
    conv.add_argument("--concurrency", type=int, default=1, help="conversations in flight at once")
    conv.add_argument("--first-prompt-tokens", type=int, default=512)
    conv.add_argument(
        "--turn-tokens", type=int, default=64, help="tokens of each later user message"
    )
    conv.add_argument("--max-tokens", type=int, default=64)
    conv.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold twins")
    conv.add_argument(
        "--session-header",
        default="X-Session-Id",
        metavar="NAME",
        help="header carrying each conversation's own id, for proxies that keep a conversation on "
        "one replica by hashing it (default: %(default)s)",
    )
    conv.add_argument(
        "--no-session-header",
        dest="session_header",
        action="store_const",
        const="",
        help="send no conversation header",
    )

    engine = sub.add_parser(
        "engine",
        help="prompt and generation tokens/s of the impetus engine (mlx-lm's benchmark conventions)",
        description="Random prompt tokens, EOS ignored, warm-up then N trials; prompt tok/s, "
        "generation tok/s, peak memory and load time with mean and spread. Engine settings come "
        "from IMPETUS_* environment variables.",
    )
    engine.add_argument("--model", required=True, help="model id or folder")
    engine.add_argument(
        "--preset",
        choices=["default", "long"],
        default="default",
        help="default: prompt 512 / generate 128; long: 2048 / 128",
    )
    engine.add_argument("--prompt-tokens", "-p", type=int, help="overrides the preset")
    engine.add_argument("--generation-tokens", "-g", type=int, help="overrides the preset")
    engine.add_argument("--trials", "-n", type=int, default=5)
    engine.add_argument("--warmup", type=int, default=1)
    engine.add_argument(
        "--raw",
        action="store_true",
        help="also run mlx_lm.stream_generate in this process, same weights and dtype",
    )
    engine.add_argument("--dtype", help="serving dtype to ask of the engine (default: its choice)")
    engine.add_argument("--seed", type=int, help="prompt seed (default: a fresh one per run)")
    _run_options(engine)
    engine.set_defaults(func=cmd_engine)

    history = sub.add_parser("history", help="stored runs, newest first")
    history.add_argument("--kind", choices=["serve", "multiturn", "engine"])
    history.add_argument("--model")
    history.add_argument("--label", help="endpoint name")
    history.add_argument("--limit", type=int, default=20)
    _output(history)
    history.set_defaults(func=cmd_history)

    show = sub.add_parser("show", help="one stored run in full")
    show.add_argument("run", help="run id, unique prefix, last or last~N")
    show.add_argument("--results", action="store_true", help="with --json: every request's result")
    _output(show)
    show.set_defaults(func=cmd_show)

    cmp = sub.add_parser("compare", help="two stored runs side by side (B relative to A)")
    cmp.add_argument("a", metavar="RUN_A", help="run id, unique prefix, last or last~N")
    cmp.add_argument("b", metavar="RUN_B")
    _output(cmp)
    cmp.set_defaults(func=cmd_compare)

    report = sub.add_parser(
        "report",
        help="run notebooks/benchmark-report.ipynb with papermill: a self-contained HTML report",
        description="Runs the report notebook (engine benchmark, serving benchmarks of each "
        "endpoint, TTFT vs prompt length, multi-turn, history) and writes one HTML page with "
        "Bokeh inline. Parameters not given keep the notebook's defaults.",
    )
    report.add_argument("--output", default="reports/benchmark-report.html", help="the HTML report")
    report.add_argument("--executed", help="the executed notebook (default: beside the report)")
    report.add_argument("--notebook", help="the report notebook (default: the source tree's)")
    report.add_argument("--endpoints", type=_list(str), help="impetus, mlx_lm and/or NAME=URL")
    report.add_argument("--model", help="model id (default: smollm2-135m)")
    report.add_argument("--model-path", help="MLX folder for mlx_lm.server and the tokenizer")
    report.add_argument("--concurrency", type=_list(int), help="e.g. 1,2,4,8")
    report.add_argument("--requests", type=int, help="requests per load profile")
    report.add_argument("--prompt-tokens", type=int)
    report.add_argument("--max-tokens", type=int)
    report.add_argument("--trials", type=int, help="engine benchmark trials (0: skip it)")
    report.add_argument(
        "--db",
        help="result store (default: IMPETUS_HOME/bench.sqlite; IMPETUS_HOME defaults to $XDG_DATA_HOME/impetus)",
    )
    report.add_argument(
        "--profile",
        default="auto",
        choices=["auto", "quick", "full"],
        help="sizes of the run: quick on a small CPU, full elsewhere (auto); options given "
        "explicitly win over the profile",
    )
    report.add_argument(
        "--quiet", action="store_true", help="no per-profile progress lines from the notebook"
    )
    report.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="any notebook parameter; VALUE is JSON or text (repeatable)",
    )
    report.set_defaults(func=cmd_report)
    return bench
