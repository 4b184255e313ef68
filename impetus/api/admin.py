"""Admin endpoints of the api itself: engine status and inference-only API keys.

(Model management — list, pull, load, unload, delete — lives in `admin_models.py`.)
"""

from __future__ import annotations

import msgspec

from impetus.api.auth import scope
from impetus.api.base import ImpetusHandler
from impetus.api.errors import APIError
from impetus.api.keys import KeyRecord
from impetus.api.openapi import operation
from impetus.api.schemas import AdminStatus, APIKeyInfo, CreatedKey, CreateKeyRequest, KeyList
from impetus.protocol import EngineStatus


def _info(rec: KeyRecord) -> APIKeyInfo:
    return APIKeyInfo(id=rec.id, name=rec.name, prefix=rec.prefix, created=rec.created)


class StatusHandler(ImpetusHandler):
    @scope("admin")
    @operation("Engine status", tag="Admin", returns=AdminStatus)
    async def get(self) -> None:
        service = self.service
        st = await service.status() if service.engine.state == "ready" else None
        if st is None:  # not started, restarting, or not answering
            engine = service.engine
            st = EngineStatus(
                state=engine.state if engine.state != "ready" else "failed",
                restarts=engine.restarts,
                last_error=engine.last_error or service.startup_error,
                memory_budget=service.settings.memory_budget,
            )
        # the OpenAI base URL as this client reached it (proxies included, with xheaders)
        prefix = self.settings.get("impetus_prefix", "/")
        endpoint = f"{self.request.protocol}://{self.request.host}{prefix}v1"
        self.write_json(
            AdminStatus(
                **msgspec.structs.asdict(st),
                endpoint=endpoint,
                in_flight=service.in_flight,
                draining=service.draining,
            )
        )


class EngineStartHandler(ImpetusHandler):
    """Start the engine now (the sidebar's Start button, under the lazy start): 202 at once,
    progress and errors are read from `admin/status`."""

    @scope("admin")
    @operation(
        "Start the engine (it starts on first use otherwise); follow admin/status",
        tag="Admin",
        status=202,
        errors={503: "The server is shutting down"},
    )
    async def post(self) -> None:
        service = self.service
        if service.draining:
            raise APIError(503, "the server is shutting down", code="shutting_down")
        state = service.engine.state
        if state in ("stopped", "failed"):
            service.restart_background()
            state = "starting"  # the start task is scheduled, not yet run
        self.write_json({"state": state}, status=202)


class KeysHandler(ImpetusHandler):
    @scope("admin")
    @operation("List inference-only API keys", tag="Admin", returns=KeyList)
    async def get(self) -> None:
        self.write_json(KeyList(data=[_info(r) for r in self.service.keys.records()]))

    @scope("admin")
    @operation(
        "Create an inference-only API key (shown once)",
        tag="Admin",
        body=CreateKeyRequest,
        returns=CreatedKey,
        status=201,
        example={"name": "my notebook client"},
    )
    async def post(self) -> None:
        req = (
            self.parse(CreateKeyRequest) if self.body_bytes().strip() else CreateKeyRequest(name="")
        )
        rec, key = self.service.keys.create(req.name)
        self.write_json(CreatedKey(**_info(rec).model_dump(), key=key), status=201)


class KeyHandler(ImpetusHandler):
    @scope("admin")
    @operation("Revoke an API key", tag="Admin", status=204, errors={404: "No such key"})
    async def delete(self, key_id: str) -> None:
        if not self.service.keys.revoke(key_id):
            raise APIError(
                404, f"No API key with id {key_id!r}.", param="key_id", code="key_not_found"
            )
        self.set_status(204)
        self.finish()
