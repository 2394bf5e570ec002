"""The web app's job queue and request checks, in process (no HTTP): tokens and owners, cancel,
recovery after a crash, an old queue file, and every request refused in one line before it is
queued, whatever its values."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unitune.app.jobs import JobQueue
from unitune.app.server import ServeConfig, Server
from unitune.errors import UserError


def test_tokens_are_random_and_answer_only_their_owner(tmp_path):
    q = JobQueue(tmp_path / "q.sqlite")
    a = q.submit("tune", {"x": 1}, owner="ana")
    b = q.submit("tune", {"x": 2}, owner="bob")
    n = q.submit("tune", {"x": 3})  # a server without logins
    assert len({a.token, b.token, n.token}) == 3
    assert all(len(j.token) == 32 and int(j.token, 16) >= 0 for j in (a, b, n))
    assert q.find(a.token, "ana").id == a.id
    assert q.find(a.token, "bob") is None and q.find(a.token, None) is None
    assert q.find(n.token, None).id == n.id and q.find(n.token, "ana") is None
    assert q.find(str(a.id), "ana") is None  # the internal id is no name
    assert [j.id for j in q.list(owner="ana")] == [a.id]
    assert [j.id for j in q.list(owner=None)] == [n.id]
    assert "job" in a.public() and "id" not in a.public() and "params" not in a.public()


def test_cancel_queued_running_and_recovery(tmp_path):
    q = JobQueue(tmp_path / "q.sqlite", max_attempts=2)
    first, second, third = (q.submit("tune", {}) for _ in range(3))
    assert q.request_cancel(second.id) == "cancelled"  # queued: ends now, never runs
    running = q.claim()
    assert running.id == first.id and q.request_cancel(first.id) == "running"
    assert q.cancel_requested(first.id) and not q.cancel_requested(third.id)
    claimed = q.claim()
    assert claimed.id == third.id  # the cancelled one is skipped
    # the server dies: the cancelled running job is not rerun, the other one is
    assert q.recover() == [third.id]
    assert q.get(first.id).state == "cancelled" and q.get(second.id).state == "cancelled"
    assert q.claim().id == third.id  # second attempt
    assert q.recover() == []  # max_attempts (2) reached: it failed, it does not run again
    assert q.get(third.id).state == "failed" and "2 attempts" in q.get(third.id).error
    assert q.request_cancel(third.id) == "failed"  # an ended job stays as it ended


def test_an_old_queue_file_gets_tokens(tmp_path):
    path = tmp_path / "q.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, state TEXT "
        "NOT NULL, params TEXT NOT NULL, progress TEXT, result TEXT, error TEXT, created REAL NOT "
        "NULL, started REAL, finished REAL, attempts INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("INSERT INTO jobs(kind, state, params, created) VALUES ('tune', 'done', '{}', 1)")
    db.commit()
    db.close()
    q = JobQueue(path)
    (job,) = q.list()
    assert len(job.token) == 32 and job.owner is None and not job.cancel
    assert q.find(job.token, None).id == job.id


def test_parameters_must_be_json_without_nan(tmp_path):
    q = JobQueue(tmp_path / "q.sqlite")
    with pytest.raises(ValueError):
        q.submit("edit", {"cfg": float("nan")})
    assert q.counts()["queued"] == 0


# --- a server in process: requests checked before they are queued --------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_photo):
    """A server (no worker thread) with one finished 4-step tune of ana's, run in process."""
    data = tmp_path_factory.mktemp("serve") / "data"
    s = Server(ServeConfig(data=str(data), device="cpu"), start_worker=False)
    token = s.submit_tune(Path(demo_photo).read_bytes(), "a scene", 4, owner="ana")
    job = s.queue.claim()
    s.worker.run(job)
    assert s.queue.find(token, "ana").state == "done", s.queue.find(token, "ana").error
    yield s, token
    s.close()


def _one_line(e: UserError) -> None:
    assert "\n" not in str(e) and str(e).strip(), repr(str(e))


def test_requests_beyond_the_limits_are_refused_in_one_line(served):
    s, tune = served
    lim = s.limits
    waiting = s.queue.counts()["queued"]
    bad = {
        "seeds": lambda: s.submit_edit(
            tune,
            "a green circle",
            {"seeds": ",".join(map(str, range(lim.max_seeds + 1)))},
            owner="ana",
        ),
        "seed": lambda: s.submit_edit(tune, "a green circle", {"seeds": str(2**64)}, owner="ana"),
        "t0": lambda: s.submit_grid(
            tune, "a green circle", ",".join(["0.5"] * (lim.max_grid_cells + 1)), owner="ana"
        ),
        "cells": lambda: s.submit_grid(
            tune, "x", ",".join(["0.5"] * 20), ",".join(map(str, range(lim.max_seeds))), owner="ana"
        ),
        "characters": lambda: s.submit_edit(tune, "a" * (lim.max_prompt_chars + 1), owner="ana"),
        "steps": lambda: s.submit_tune(b"", "", lim.max_tune_steps + 1, owner="ana"),
        "whole number": lambda: s.submit_tune(b"", "", "many", owner="ana"),
        "finite": lambda: s.submit_edit(tune, "x", {"fidelity": float("nan")}, owner="ana"),
        "max_sample_steps": lambda: s.submit_edit(
            tune, "x", {"steps": lim.max_sample_steps + 1}, owner="ana"
        ),
        "no such tune": lambda: s.submit_edit(tune, "x", owner="bob"),
        "no such job": lambda: s.cancel(tune, owner="bob"),
    }
    for words, call in bad.items():
        with pytest.raises(UserError) as e:
            call()
        _one_line(e.value)
        assert any(w in str(e.value).lower() for w in words.split("|")) or "most" in str(e.value), (
            words,
            str(e.value),
        )
    assert s.queue.counts()["queued"] == waiting  # nothing reached the queue
    assert s.tunes("bob") == [] and [t for _, t in s.tunes("ana")] == [tune]
    with pytest.raises(UserError):
        s.files(tune, "bob")


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet="0123456789,.-e ", max_size=30),
    st.lists(st.integers(min_value=-5, max_value=2**40), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
_fields = st.sampled_from(
    [
        "seeds",
        "t0",
        "cfg",
        "steps",
        "checkpoint",
        "sine_K",
        "sine_v",
        "method",
        "sampler",
        "fidelity",
        "eta",
        "size",
        "bogus",
    ]
)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    prompt=_values,
    t0s=_values,
    seeds=_values,
    steps=_values,
    caption=_values,
    key=_fields,
    value=_values,
)
def test_any_request_is_queued_or_refused_in_one_line(
    served, prompt, t0s, seeds, steps, caption, key, value
):
    """Generated values of every type into every request: a UserError of one line or a queued
    job, never another exception (the API's callers get nothing else)."""
    s, tune = served
    calls = [
        lambda: s.submit_edit(tune, prompt, {key: value}, owner="ana"),
        lambda: s.submit_edit(tune, "a green circle", {key: value}, owner="ana"),
        lambda: s.submit_grid(tune, prompt, t0s, seeds, owner="ana"),
        lambda: s.submit_tune(b"not an image", caption, steps, owner="ana"),
        lambda: s.cancel(value, owner="ana"),
        lambda: s.job(prompt, owner="ana"),
    ]
    for call in calls:
        try:
            token = call()
        except UserError as e:
            _one_line(e)
        else:
            if isinstance(token, str) and len(token) == 32:
                job = s.queue.find(token, "ana")
                json.dumps(job.params, allow_nan=False)  # what runs is plain JSON
                s.queue.request_cancel(job.id)  # keep the queue empty for the next example


def test_the_forms_defaults_are_the_configs(served, demo_photo):
    """The server's and the page's defaults come from config's dataclasses (one home each): a
    grid or a tune asked for without them runs GridConfig's t0s and seeds and TuneConfig's steps;
    the page's fields start at the same values; the server's limits are SERVE_LIMITS."""
    gr = pytest.importorskip("gradio")
    from unitune.app.ui import build
    from unitune.config import SERVE_LIMITS, EditConfig, GridConfig, TuneConfig

    s, tune = served
    assert ServeConfig().limits == SERVE_LIMITS and s.limits == SERVE_LIMITS
    grid = s.queue.find(s.submit_grid(tune, "a green circle", owner="ana"), "ana")
    job = s.queue.find(s.submit_tune(Path(demo_photo).read_bytes(), owner="ana"), "ana")
    for j in (grid, job):
        s.queue.request_cancel(j.id)
    assert tuple(grid.params["grid"]["t0s"]) == GridConfig().t0s
    assert tuple(grid.params["grid"]["seeds"]) == GridConfig().seeds
    assert job.params["settings"].get("steps", TuneConfig().steps) == TuneConfig().steps
    page = build(s)
    by_id = {b.elem_id: b for b in page.blocks.values() if getattr(b, "elem_id", None)}
    assert by_id["steps"].value == TuneConfig().steps
    assert by_id["t0s"].value == ",".join(f"{t:g}" for t in GridConfig().t0s)
    assert by_id["grid-seeds"].value == ",".join(map(str, GridConfig().seeds))
    assert by_id["seeds"].value == ",".join(map(str, s.cfg.page_seeds))
    sliders = {b.label: b.value for b in page.blocks.values() if isinstance(b, gr.Slider)}
    assert EditConfig().sine_K in sliders.values() and EditConfig().sine_v in sliders.values()
