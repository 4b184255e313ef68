"""Benchmark runs in a small SQLite file (Settings().home / "bench.sqlite").

One row per run holds the summary (parameters, machine, figures) as JSON; per-request results
sit in a second table, loaded only when a run is opened, so `history` stays fast.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from impetus.bench.schema import RequestResult, RunKind, RunRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created TEXT NOT NULL,
    label TEXT NOT NULL,
    model TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    part INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, part)
);
"""


def default_path() -> Path:
    from impetus.config import Settings, migrate_legacy_home

    # Settings(), not model_validate: only the constructor reads IMPETUS_HOME and the settings file
    settings = Settings()
    migrate_legacy_home(settings)  # a history kept in the old single folder moves to the data one
    return settings.home / "bench.sqlite"


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and short enough to type: 20250101-120000-3fa2."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


class RunNotFound(LookupError):
    pass


class ResultStore:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def save(self, record: RunRecord) -> str:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs (id, kind, created, label, model, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.kind,
                    record.created.isoformat(),
                    record.label,
                    record.model,
                    record.summary().model_dump_json(),
                ),
            )
            db.execute("DELETE FROM results WHERE run_id = ?", (record.id,))
            db.executemany(
                "INSERT INTO results (run_id, part, data) VALUES (?, ?, ?)",
                [
                    (record.id, i, json.dumps([r.model_dump(mode="json") for r in part]))
                    for i, part in enumerate(record.results)
                ],
            )
        return record.id

    def resolve(self, ref: str) -> str:
        """A run id, a unique prefix of one, `last`, or `last~N` (the Nth before the last)."""
        with self._connect() as db:
            match = re.fullmatch(r"last(?:~(\d+))?", ref)
            if match:
                offset = int(match.group(1) or 0)
                row = db.execute(
                    "SELECT id FROM runs ORDER BY created DESC, id DESC LIMIT 1 OFFSET ?", (offset,)
                ).fetchone()
                if row is None:
                    raise RunNotFound(f"no run {ref!r}: the store holds fewer runs")
                return str(row[0])
            rows = db.execute(
                "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id", (len(ref), ref)
            ).fetchall()
        ids = [r[0] for r in rows]
        if ref in ids:
            return ref
        if len(ids) == 1:
            return str(ids[0])
        if not ids:
            raise RunNotFound(f"no run {ref!r} in {self.path}")
        raise RunNotFound(f"{ref!r} matches {len(ids)} runs: {', '.join(ids[:5])}")

    def get(self, ref: str, *, results: bool = True) -> RunRecord:
        run_id = self.resolve(ref)
        with self._connect() as db:
            row = db.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
            parts = (
                db.execute(
                    "SELECT data FROM results WHERE run_id = ? ORDER BY part", (run_id,)
                ).fetchall()
                if results
                else []
            )
        record = RunRecord.model_validate_json(row[0])
        record.results = [
            [RequestResult.model_validate(r) for r in json.loads(p[0])] for p in parts
        ]
        return record

    def list(
        self,
        *,
        kind: RunKind | None = None,
        model: str | None = None,
        label: str | None = None,
        limit: int | None = 50,
    ) -> list[RunRecord]:
        """Summaries (no per-request results), newest first."""
        where, args = [], []
        for column, value in (("kind", kind), ("model", model), ("label", label)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT record FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as db:
            rows = db.execute(sql, args).fetchall()
        return [RunRecord.model_validate_json(r[0]) for r in rows]

    def delete(self, ref: str) -> str:
        run_id = self.resolve(ref)
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        return run_id
