"""The URL table, shared by the Jupyter extension (prefix `{base_url}impetus/`) and `impetus serve` (`/`).

It is also the source of /openapi.json. To add an endpoint: write the handler (an
`ImpetusHandler`), tag each HTTP method with `@scope(...)` (who may call it) and
`@operation(summary, tag=..., body=RequestModel, returns=ResponseModel, ...)` (what it takes and
gives; `impetus.api.openapi.Operation`), and add one line here. The spec, the explorer at `docs`
and the sidebar's generated types follow; nothing else lists routes.

`python -m impetus.api.routes [FILE]` writes the OpenAPI document of this table.
"""

from __future__ import annotations

import argparse
import json
import sys

from impetus.api import admin, admin_models, anthropic, ollama, ops, responses
from impetus.api import openai_handlers as oa
from impetus.api.base import ImpetusHandler
from impetus.api.openapi import openapi_document

ROUTES: list[tuple[str, type[ImpetusHandler]]] = [
    (r"v1/models", oa.ModelsHandler),
    (r"v1/models/(.+)", oa.ModelHandler),
    (r"v1/chat/completions", oa.ChatCompletionsHandler),
    (r"v1/completions", oa.CompletionsHandler),
    (r"v1/embeddings", oa.EmbeddingsHandler),
    (r"v1/messages", anthropic.MessagesHandler),
    (r"v1/messages/count_tokens", anthropic.CountTokensHandler),
    (r"v1/responses", responses.ResponsesHandler),
    (r"v1/responses/([A-Za-z0-9_-]+)", responses.ResponseHandler),
    *ollama.ROUTES,
    (r"health", ops.HealthHandler),
    (r"ready", ops.ReadyHandler),
    (r"metrics", ops.MetricsHandler),
    (r"openapi\.json", ops.OpenAPIHandler),
    (r"docs/?", ops.ExplorerHandler),
    (r"docs/(explorer\.js|explorer\.css)", ops.ExplorerHandler),
    (r"admin/status", admin.StatusHandler),
    (r"admin/engine/start", admin.EngineStartHandler),
    (r"admin/keys", admin.KeysHandler),
    (r"admin/keys/([A-Za-z0-9_-]+)", admin.KeyHandler),
    *admin_models.ROUTES,
]


def build_handlers(prefix: str) -> list[tuple[str, type[ImpetusHandler]]]:
    """(pattern, handler) pairs under `prefix`: "/" for serve, "impetus/" in Jupyter (where the
    extension machinery prepends the server's base_url)."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return [(prefix + pattern, handler) for pattern, handler in ROUTES]


def handler_classes() -> list[type[ImpetusHandler]]:
    return [handler for _, handler in ROUTES]


def main(argv: list[str] | None = None) -> int:
    """Write the OpenAPI document of ROUTES (strict: every route method documented)."""
    parser = argparse.ArgumentParser(
        prog="python -m impetus.api.routes", description="Write impetus's OpenAPI document."
    )
    parser.add_argument("output", nargs="?", help="file to write (default: standard output)")
    parser.add_argument("--prefix", default="/", help="the server URL prefix (default: /)")
    args = parser.parse_args(argv)
    doc = openapi_document(args.prefix, ROUTES, strict=True)
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
