"""The persistent job queue of `unitune serve`: one SQLite file in the data directory, WAL mode.

Why SQLite: the queue must survive a server restart (a tune interrupted mid-run resumes from its
last checkpoint, queued jobs still run, finished results stay listed) and be shared by the web
handlers (many threads) and the worker thread without a separate service. WAL lets readers (the
page polling progress) proceed while the worker writes; every call opens its own short
connection, so no connection crosses threads.

A job is (kind, params) -> result | error, in one of the states
``queued -> running -> done | failed``. ``claim`` moves the oldest queued job to running in one
statement (BEGIN IMMEDIATE), so two workers never take the same job. ``recover`` (at start) puts
jobs a previous process left running back at the head of the queue. The queue is bounded: a
submit beyond ``max_queued`` waiting jobs raises :class:`QueueFull` with a message for the user.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed")
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,             -- "tune" | "edit" | "grid"
    state TEXT NOT NULL,            -- STATES
    params TEXT NOT NULL,           -- JSON: what to run
    progress TEXT,                  -- JSON: {"step", "of", "loss", "eta_s"} while running
    result TEXT,                    -- JSON: what it produced (paths inside the data dir)
    error TEXT,                     -- one line, for the user
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0  -- claims so far (a restart re-claims a running job)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
"""


class QueueFull(Exception):
    """The queue holds ``max_queued`` waiting jobs already."""


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    state: str
    params: dict[str, Any]
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    created: float
    started: float | None
    finished: float | None
    attempts: int

    @staticmethod
    def from_row(r: sqlite3.Row) -> Job:
        load = lambda s: None if s is None else json.loads(s)  # noqa: E731
        return Job(r["id"], r["kind"], r["state"], json.loads(r["params"]), load(r["progress"]),
                   load(r["result"]), r["error"], r["created"], r["started"], r["finished"],
                   r["attempts"])  # fmt: skip

    def public(self) -> dict[str, Any]:
        """What the page and the API show of a job."""
        return {"id": self.id, "kind": self.kind, "state": self.state, "progress": self.progress,
                "result": self.result, "error": self.error, "created": self.created,
                "finished": self.finished}  # fmt: skip


class JobQueue:
    """The queue in ``path`` (created if absent)."""

    def __init__(self, path: str | Path, max_queued: int = 32) -> None:
        self.path = Path(path)
        self.max_queued = max_queued
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: set once on the file
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=30000")
        try:
            yield db
        finally:
            db.close()

    @property
    def journal_mode(self) -> str:
        with self._db() as db:
            return db.execute("PRAGMA journal_mode").fetchone()[0]

    def submit(self, kind: str, params: dict[str, Any]) -> int:
        """Queue a job; its id. Raises QueueFull when ``max_queued`` jobs are waiting."""
        body = json.dumps(params)
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # count and insert as one step
            try:
                waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()[0]
                if waiting >= self.max_queued:
                    raise QueueFull(f"the queue is full ({waiting} jobs waiting): try again when some have run")  # fmt: skip
                cur = db.execute("INSERT INTO jobs(kind, state, params, created) VALUES (?, 'queued', ?, ?)",
                                 (kind, body, time.time()))  # fmt: skip
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return int(cur.lastrowid)

    def claim(self) -> Job | None:
        """The oldest queued job, now running (None if none waits)."""
        with self._db() as db:
            row = db.execute(
                "UPDATE jobs SET state='running', started=?, attempts=attempts+1 WHERE id = "
                "(SELECT id FROM jobs WHERE state='queued' ORDER BY id LIMIT 1) RETURNING *",
                (time.time(),),
            ).fetchone()
        return None if row is None else Job.from_row(row)

    def progress(self, job_id: int, **fields: Any) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET progress=? WHERE id=?", (json.dumps(fields), job_id))

    def finish(self, job_id: int, result: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET state='done', result=?, finished=? WHERE id=?",
                       (json.dumps(result), time.time(), job_id))  # fmt: skip

    def fail(self, job_id: int, error: str) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET state='failed', error=?, finished=? WHERE id=?",
                       (error.strip().splitlines()[0][:300] if error.strip() else "failed", time.time(), job_id))  # fmt: skip

    def recover(self) -> list[int]:
        """Jobs a previous process left running go back to the queue (ids); called at start."""
        with self._db() as db:
            rows = db.execute("UPDATE jobs SET state='queued' WHERE state='running' RETURNING id").fetchall()  # fmt: skip
        return sorted(r[0] for r in rows)

    def get(self, job_id: int) -> Job | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else Job.from_row(row)

    def list(self, kind: str | None = None, state: str | None = None, limit: int = 200) -> list[Job]:  # fmt: skip
        """Newest first."""
        q, args = "SELECT * FROM jobs WHERE 1=1", []
        if kind:
            q, args = q + " AND kind=?", [*args, kind]
        if state:
            q, args = q + " AND state=?", [*args, state]
        with self._db() as db:
            rows = db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._db() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | {r[0]: r[1] for r in rows}
