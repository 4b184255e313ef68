"""Inference-only API keys: created and revoked through `admin/keys`, stored hashed, file mode 0600.

A key is shown once, at creation; the file keeps its SHA-256 (the keys are 256 random bits, so a
fast hash is safe) plus an id, a label and a short prefix to recognise it. The file is re-read
when it changes on disk, so the Jupyter extension and `impetus serve` sharing one IMPETUS_HOME see
each other's keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

KEY_PREFIX = "imp-"
Scope = Literal["inference", "admin"]


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    hash: str
    created: int
    scope: Literal["inference"] = "inference"


@dataclass(frozen=True)
class KeyMatch:
    """Who a presented key belongs to."""

    id: str
    scope: Scope


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore:
    """Stored inference keys plus the configured full-access keys of `impetus serve`."""

    def __init__(self, path: Path, admin_keys: list[str] | None = None) -> None:
        self.path = path
        self._admin = [_digest(k) for k in admin_keys or [] if k]
        self._lock = threading.Lock()
        self._records: list[KeyRecord] = []
        self._mtime: float | None = None

    # ---- lookup

    def match(self, key: str) -> KeyMatch | None:
        if not key:
            return None
        digest = _digest(key)
        for i, admin in enumerate(self._admin):
            if hmac.compare_digest(digest, admin):
                return KeyMatch(id=f"config-{i}", scope="admin")
        for rec in self._load():
            if hmac.compare_digest(digest, rec.hash):
                return KeyMatch(id=rec.id, scope=rec.scope)
        return None

    @property
    def has_admin_keys(self) -> bool:
        return bool(self._admin)

    # ---- management

    def records(self) -> list[KeyRecord]:
        return list(self._load())

    def create(self, name: str = "") -> tuple[KeyRecord, str]:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        rec = KeyRecord(
            id=secrets.token_hex(6),
            name=name,
            prefix=key[: len(KEY_PREFIX) + 6],
            hash=_digest(key),
            created=int(time.time()),
        )
        with self._lock:
            records = self._read()
            records.append(rec)
            self._write(records)
        return rec, key

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            records = self._read()
            kept = [r for r in records if r.id != key_id]
            if len(kept) == len(records):
                return False
            self._write(kept)
        return True

    # ---- file

    def _load(self) -> list[KeyRecord]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._records, self._mtime = [], None
            return self._records
        if mtime != self._mtime:
            with self._lock:
                self._records = self._read()
                self._mtime = mtime
        return self._records

    def _read(self) -> list[KeyRecord]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        return [KeyRecord(**r) for r in data.get("keys", [])]

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        # Created 0600 from the start: the hashes never sit in a world-readable file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": [asdict(r) for r in records]}, f, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._records = records
        self._mtime = self.path.stat().st_mtime_ns
