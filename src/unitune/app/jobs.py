"""The persistent job queue of `unitune serve`: one SQLite file in the data directory, WAL mode.

Why SQLite: the queue must survive a server restart (a tune interrupted mid-run resumes from its
last checkpoint, queued jobs still run, finished results stay listed) and be shared by the web
handlers (many threads) and the worker thread without a separate service. WAL lets readers (the
page polling progress) proceed while the worker writes; every call opens its own short
connection, so no connection crosses threads.

A job is (kind, params) -> result | error, in one of the states
``queued -> running -> done | failed | cancelled``. ``claim`` moves the oldest queued job to
running in one statement, so two workers never take the same job. ``recover`` (at start) puts
jobs a previous process left running back at the head of the queue, unless a cancel was asked
for them or they already ran ``max_attempts`` times (a job that kills the server would otherwise
kill every server after it). The queue is bounded: a submit beyond ``max_queued`` waiting jobs
raises :class:`QueueFull` with a message for the user.

Who may see a job: every job has a ``token`` (128 random bits, the only name the page and the API
ever use for it; the integer id is internal: folder names, the log) and an ``owner`` (the login
that made it, or None on a server without logins). :meth:`JobQueue.find` answers only a caller
who holds the token AND is the owner; any other caller is told the job does not exist, so a
token is no oracle for other users' jobs.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed", "cancelled")
ENDED = ("done", "failed", "cancelled")
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
    attempts INTEGER NOT NULL DEFAULT 0,  -- claims so far (a restart re-claims a running job)
    token TEXT,                     -- the job's public name: 32 hex digits, random
    owner TEXT,                     -- the login that submitted it (NULL: a server without logins)
    cancel INTEGER NOT NULL DEFAULT 0  -- 1: asked to stop (a running job stops at its next step)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
"""
# columns added after the first release: a queue file made by an older server gets them on open
ADDED = {"token": "TEXT", "owner": "TEXT", "cancel": "INTEGER NOT NULL DEFAULT 0"}


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
    token: str
    owner: str | None
    cancel: bool

    @staticmethod
    def from_row(r: sqlite3.Row) -> Job:
        def load(s: str | None) -> Any:
            return None if s is None else json.loads(s)

        return Job(
            r["id"],
            r["kind"],
            r["state"],
            json.loads(r["params"]),
            load(r["progress"]),
            load(r["result"]),
            r["error"],
            r["created"],
            r["started"],
            r["finished"],
            r["attempts"],
            r["token"],
            r["owner"],
            bool(r["cancel"]),
        )

    def public(self) -> dict[str, Any]:
        """What the page and the API show of a job: no paths, no internal id, no parameters
        (a job's files are fetched through the server, by its token)."""
        return {
            "job": self.token,
            "kind": self.kind,
            "state": self.state,
            "progress": self.progress,
            "error": self.error,
            "created": self.created,
            "finished": self.finished,
        }


class JobQueue:
    """The queue in ``path`` (created if absent)."""

    def __init__(self, path: str | Path, max_queued: int = 32, max_attempts: int = 3) -> None:
        self.path = Path(path)
        self.max_queued = max_queued
        self.max_attempts = max_attempts
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: set once on the file
            db.executescript(SCHEMA)
            have = {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}
            for col, decl in ADDED.items():
                if col not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {col} {decl}")
            for (job_id,) in db.execute("SELECT id FROM jobs WHERE token IS NULL").fetchall():
                db.execute("UPDATE jobs SET token=? WHERE id=?", (secrets.token_hex(16), job_id))
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS jobs_token ON jobs(token)")

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

    def submit(self, kind: str, params: dict[str, Any], owner: str | None = None) -> Job:
        """Queue a job for ``owner``. Raises QueueFull when ``max_queued`` jobs are waiting."""
        body = json.dumps(params, allow_nan=False)
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # count and insert as one step
            try:
                waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE state='queued'").fetchone()[0]
                if waiting >= self.max_queued:
                    raise QueueFull(
                        f"the queue is full ({waiting} jobs waiting): try again when some have run"
                    )
                row = db.execute(
                    "INSERT INTO jobs(kind, state, params, created, token, owner) "
                    "VALUES (?, 'queued', ?, ?, ?, ?) RETURNING *",
                    (kind, body, time.time(), secrets.token_hex(16), owner),
                ).fetchone()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Job.from_row(row)

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
            db.execute(
                "UPDATE jobs SET state='done', result=?, finished=? WHERE id=?",
                (json.dumps(result), time.time(), job_id),
            )

    def fail(self, job_id: int, error: str, state: str = "failed") -> None:
        """End a job with a one-line reason (``state``: failed, or cancelled)."""
        line = error.strip().splitlines()[0][:300] if error.strip() else state
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET state=?, error=?, finished=? WHERE id=?",
                (state, line, time.time(), job_id),
            )

    def request_cancel(self, job_id: int) -> str:
        """Ask a job to stop: a queued one ends now, a running one at its next step (the worker
        ends it); an ended one is left as it is. The job's state after the call."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "UPDATE jobs SET state='cancelled', error='cancelled before it ran', "
                    "finished=?, cancel=1 WHERE id=? AND state='queued'",
                    (time.time(), job_id),
                )
                db.execute("UPDATE jobs SET cancel=1 WHERE id=? AND state='running'", (job_id,))
                state = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return state

    def cancel_requested(self, job_id: int) -> bool:
        with self._db() as db:
            row = db.execute("SELECT cancel FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row[0])

    def recover(self) -> list[int]:
        """Jobs a previous process left running go back to the queue (their ids), except those
        asked to cancel (cancelled now) and those claimed ``max_attempts`` times already (failed:
        each attempt ended with the server); called at start."""
        now = time.time()
        with self._db() as db:
            db.execute(
                "UPDATE jobs SET state='cancelled', error='cancelled', finished=? "
                "WHERE state='running' AND cancel=1",
                (now,),
            )
            db.execute(
                "UPDATE jobs SET state='failed', finished=?, error=? "
                "WHERE state='running' AND attempts >= ?",
                (
                    now,
                    f"the server stopped during each of {self.max_attempts} attempts",
                    self.max_attempts,
                ),
            )
            rows = db.execute(
                "UPDATE jobs SET state='queued' WHERE state='running' RETURNING id"
            ).fetchall()
        return sorted(r[0] for r in rows)

    def find(self, token: str, owner: str | None) -> Job | None:
        """The job named ``token`` if ``owner`` may see it (None for anyone else)."""
        if not isinstance(token, str) or len(token) != 32:
            return None
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE token=?", (token,)).fetchone()
        if row is None or row["owner"] != owner:
            return None
        return Job.from_row(row)

    def get(self, job_id: int) -> Job | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else Job.from_row(row)

    def list(
        self,
        kind: str | None = None,
        state: str | None = None,
        limit: int = 200,
        owner: str | None | object = ...,
    ) -> list[Job]:
        """Newest first; ``owner`` given: only that owner's jobs (None: the jobs of no login)."""
        q, args = "SELECT * FROM jobs WHERE 1=1", []
        if owner is not ...:
            q, args = q + " AND owner IS ?", [*args, owner]
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
