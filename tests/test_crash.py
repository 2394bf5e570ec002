"""A killed run never leaves a folder that lies or cannot resume (issue #31).

Each command (a short tune of the embedded model, a merged-folder export with --overwrite over
an older one, a LoRA export, an edit) runs once uninterrupted, counting its file events
(fileio's UNITUNE_CRASH_LOG hook); then, for each event in turn, it runs again killed with
SIGKILL at that event (UNITUNE_CRASH_AT), the killed state is checked (what exists is complete:
a tune folder opens and its recorded checkpoints verify, an export is the old one or the new one
whole), the command is rerun to completion, and the whole working folder (hidden files included,
so no temp may be left) must be bit-identical to the uninterrupted run's. The one exception: a
checkpoint record's ``seconds`` (wall-clock training time) is dropped from manifests before
comparing.

The runs are child processes forked from a server that imported torch and unitune once
(multiprocessing's forkserver), so each costs the command's own work, not the imports.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest

from unitune.errors import UserError

pytestmark = pytest.mark.slow

PRELOAD = [
    "unitune.cli",
    "unitune.tune",
    "unitune.export",
    "unitune.edit",
    "unitune.outputs",
    "unitune.backbones.sd",
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "scipy.stats",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
    "diffusers.schedulers.scheduling_dpmsolver_multistep",
    "diffusers.loaders.single_file_utils",
]  # imported once, in the fork server
TUNE = [
    "--steps",
    "4",
    "--save-at",
    "2,4",
    "--batch-size",
    "1",
    "--method",
    "lora",
    "--lora-rank",
    "4",
    "--resolution",
    "32",
    "--device",
    "cpu",
    "--quiet",
]


def _child(argv: list[str], env: dict[str, str], log: str) -> None:
    os.environ.update(env)
    import torch

    torch.set_num_threads(1)  # the tiny model gains nothing from threads; shared cores lose
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from unitune.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@pytest.fixture(scope="module")
def ctx():
    c = multiprocessing.get_context("forkserver")
    c.set_forkserver_preload(PRELOAD)
    return c


class Runner:
    def __init__(self, ctx, root: Path):
        self.ctx, self.root = ctx, root

    def __call__(self, *argv, crash_at: int | None = None, events: Path | None = None) -> int:
        env = {}
        if crash_at is not None:
            env["UNITUNE_CRASH_AT"] = str(crash_at)
        if events is not None:
            env["UNITUNE_CRASH_LOG"] = str(events)
        log = self.root / "child.log"
        p = self.ctx.Process(target=_child, args=([str(a) for a in argv], env, str(log)))
        p.start()
        p.join(120)
        assert p.exitcode is not None, "the child hung"
        if crash_at is None:
            assert p.exitcode == 0, log.read_text()[-3000:]
        return p.exitcode

    def count(self, *argv) -> list[str]:
        ev = self.root / "events.txt"
        ev.unlink(missing_ok=True)
        self(*argv, events=ev)
        return ev.read_text().splitlines()


def snapshot(folder: Path) -> dict[str, object]:
    """Every file under ``folder`` (hidden ones too) -> its bytes; manifests parsed, with the
    checkpoint records' wall-clock ``seconds`` dropped."""
    out: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(folder):
        for d in dirs:
            if not os.listdir(os.path.join(dirpath, d)):
                out[os.path.relpath(os.path.join(dirpath, d), folder) + "/"] = b""
        for name in files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            if name == "manifest.json":
                m = json.loads(p.read_text())
                for rec in m.get("checkpoints", {}).values():
                    rec.pop("seconds", None)
                out[rel] = m
            else:
                out[rel] = p.read_bytes()
    return out


def hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in Path(rel).parts)


def diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def assert_tune_truthful(path: Path) -> None:
    """A killed tune's folder: absent, or a tune folder with its base files whose recorded
    checkpoints all verify."""
    from unitune.tunefolder import TuneFolder

    if not path.exists():
        return
    tf = TuneFolder.open(path)
    for name in ("original.png", "base.png", "base_latents.safetensors"):
        assert (path / name).is_file(), name
    assert tf.damaged(digest=True) == []


# Where to kill by default: the first event, and the first time each kind of event (a temp
# file moved in, a folder installed, a file removed) happens to each kind of file (checkpoints
# of any step alike), which gives a tune's distinct states: the new folder built but not moved
# in, moved in, a checkpoint without its record, a record without its resume state, the resume
# state, the completion; the other events repeat one of these. UNITUNE_CRASH_TEST_ALL=1 kills
# at every event (a tune has 17; about 4x the time).
ALL = os.environ.get("UNITUNE_CRASH_TEST_ALL") == "1"


def _kill_points(events: list[str]) -> list[int]:
    """1-based indexes of the events to kill at (see above)."""
    if ALL:
        return list(range(1, len(events) + 1))
    seen, out = set(), [1]
    for i, line in enumerate(events, 1):
        kind, path = line.split(" ", 1)
        key = (kind, re.sub(r"\d+", "N", Path(path).name))
        if kind != "written" and key not in seen:
            seen.add(key)
            out.append(i)
    return sorted(set(out))


@pytest.fixture(scope="module")
def photo_copy(demo_photo, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("photo") / "scene.png"
    shutil.copy(demo_photo, p)
    return p


def test_tune_killed_at_every_file_event_resumes_to_the_same_bytes(ctx, photo_copy, tmp_path):
    work = tmp_path / "w"
    run = Runner(ctx, tmp_path)
    argv = ("tune", photo_copy, "--out", work / "t", *TUNE)
    work.mkdir()
    events = run.count(*argv)
    ref = snapshot(work)
    assert len(events) >= 10  # base folder, 2 x (checkpoint, manifest, resume), completion
    for n in _kill_points(events):
        shutil.rmtree(work)
        work.mkdir()
        assert run(*argv, crash_at=n) == -signal.SIGKILL, n
        assert_tune_truthful(work / "t")
        run(*argv)
        assert diff(snapshot(work), ref) == [], (n, events[n - 1])


def test_tune_rerun_retrains_a_damaged_checkpoint(ctx, photo_copy, tmp_path, capsys):
    """A truncated or altered checkpoint is found before any model loads (edit) and re-trained
    by a tune rerun."""
    from unitune.cli import main

    work = tmp_path / "w"
    work.mkdir()
    run = Runner(ctx, tmp_path)
    argv = ("tune", photo_copy, "--out", work / "t", *TUNE)
    run(*argv)
    ref = snapshot(work)
    for damage in ("truncate", "flip"):
        f = work / "t" / "checkpoints" / "step-000002.safetensors"
        data = f.read_bytes()
        f.write_bytes(data[:-100] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
        code = main(
            [
                "edit",
                str(work / "t"),
                "a dog",
                "--checkpoint",
                "2",
                "--out",
                str(tmp_path / "e"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and "damaged" in err and "Traceback" not in err, err
        run(*argv)
        assert diff(snapshot(work), ref) == [], damage


@pytest.fixture(scope="module")
def tuned_world(ctx, photo_copy, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tuned")
    Runner(ctx, root)("tune", photo_copy, "--out", root / "t", *TUNE)
    return root / "t"


def test_export_overwrite_killed_at_every_file_event(ctx, tuned_world, tmp_path):
    """--overwrite of a merged folder: at every kill the path holds the old export or the new
    one, whole; the rerun leaves exactly the new one and nothing hidden."""
    work = tmp_path / "w"
    run = Runner(ctx, tmp_path)
    old_argv = (
        "export",
        tuned_world,
        "--format",
        "merged",
        "--checkpoint",
        "2",
        "--out",
        work / "m",
        "--device",
        "cpu",
        "--quiet",
    )
    argv = (
        "export",
        tuned_world,
        "--format",
        "merged",
        "--checkpoint",
        "4",
        "--out",
        work / "m",
        "--overwrite",
        "--device",
        "cpu",
        "--quiet",
    )
    work.mkdir()
    run(*old_argv)
    old = snapshot(work / "m")
    start = work.parent / "start"
    shutil.copytree(work, start)
    events = run.count(*argv)
    ref = snapshot(work)
    new = snapshot(work / "m")
    assert old != new
    for n in _kill_points(events):
        shutil.rmtree(work)
        shutil.copytree(start, work)
        assert run(*argv, crash_at=n) == -signal.SIGKILL, n
        assert snapshot(work / "m") in (old, new), (n, events[n - 1])
        run(*argv)
        assert diff(snapshot(work), ref) == [], (n, events[n - 1])


def test_lora_export_and_edit_killed_at_every_file_event(ctx, tuned_world, tmp_path):
    """A LoRA file and an edit's PNGs + sidecars: never a partial file, never a sidecar without
    its PNG; the rerun gives the uninterrupted bytes and no temps."""
    run = Runner(ctx, tmp_path)
    work = tmp_path / "w"
    # (a kill after the last rename leaves the complete file: the rerun needs --overwrite)
    for argv in (
        (
            "export",
            tuned_world,
            "--format",
            "diffusers-lora",
            "--out",
            work / "l.safetensors",
            "--overwrite",
            "--device",
            "cpu",
            "--quiet",
        ),
        (
            "edit",
            tuned_world,
            "a red square",
            "--steps",
            "2",
            "--seeds",
            "0",
            "--out",
            work / "e",
            "--device",
            "cpu",
            "--quiet",
        ),
    ):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        events = run.count(*argv)
        ref = snapshot(work)
        for n in _kill_points(events):
            shutil.rmtree(work)
            work.mkdir()
            assert run(*argv, crash_at=n) == -signal.SIGKILL, n
            for side in work.rglob("*.json"):
                assert side.with_suffix(".png").is_file(), side  # no sidecar without its PNG
            shown = {k: v for k, v in snapshot(work).items() if not hidden(k)}
            assert all(ref[k] == v for k, v in shown.items()), n  # what shows is complete
            run(*argv)
            assert diff(snapshot(work), ref) == [], (argv[0], n, events[n - 1])


# --- full disk, no permission: one line, no traceback -----------------------------------------
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_os_errors_while_writing_are_one_line(tmp_path, monkeypatch, code):
    from unitune import fileio

    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fileio.os, "replace", refuse)
    with pytest.raises(UserError) as e:
        fileio.atomic_write_text(tmp_path / "a.txt", "x")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "a.txt") in msg and " — " in msg
    assert list(tmp_path.iterdir()) == []  # the temp is gone too


def test_safetensors_io_error_is_one_line(tmp_path, monkeypatch):
    import safetensors.torch
    import torch

    from unitune import fileio

    def full(*a, **k):
        raise Exception(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
            'message: "No space left on device" })'
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(UserError, match="disk is full"):
        fileio.atomic_save_safetensors({"a": torch.zeros(2)}, tmp_path / "c.safetensors")


def test_save_png_writes_no_sidecar_without_its_png(tmp_path, monkeypatch):
    from PIL import Image

    from unitune import pngmeta

    img = Image.new("RGB", (8, 8))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(UserError, match="disk is full"):
        pngmeta.save_png(img, tmp_path / "x.png", {"seed": 0})
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_dead_runs_are_cleaned_live_ones_kept(tmp_path):
    from unitune import fileio

    dead = 2**22 + 12345  # beyond pid_max's default: no such process
    (tmp_path / f".manifest.json.{dead}.abc.tmp").write_text("")
    (tmp_path / f".manifest.json.{os.getpid()}.abc.tmp").write_text("")
    (tmp_path / f".t.partial-{dead}-xyz").mkdir()
    (tmp_path / "keep.tmp").write_text("")
    fileio.clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".manifest.json.{os.getpid()}.abc.tmp", "keep.tmp"]
    )


def test_install_dir_without_exchange_recovers(tmp_path, monkeypatch):
    """Where RENAME_EXCHANGE is unsupported: two renames; a kill between them leaves the old
    folder in the trash, and ``recover`` puts it back."""
    from unitune import fileio

    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    target = tmp_path / "m"
    target.mkdir()
    (target / "f").write_text("old")
    new = fileio.new_dir(target)
    (new / "f").write_text("new")
    fileio.install_dir(new, target)
    assert (target / "f").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["m"]
    # the state a kill between the two renames leaves (by a process now dead)
    trash = tmp_path / f".m.trash-{2**22 + 1}-abc"
    partial = tmp_path / f".m.partial-{2**22 + 1}-abc"
    target.rename(trash)
    partial.mkdir()
    fileio.recover(target)
    assert (target / "f").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["m"]


def _full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_in_tune_and_edit_is_one_line_and_resumable(
    ctx, photo_copy, tuned_world, tmp_path, monkeypatch, capsys
):
    """The CLI on a full disk: exit 2 with one line naming the file, the disk and the fix; the
    tune folder stays resumable to the same bytes, and an edit leaves no sidecar."""

    def one_line(code: int) -> str:
        err = capsys.readouterr().err.strip()
        lines = [ln for ln in err.splitlines() if ln.startswith("unitune: error:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "disk is full" in lines[0] and "free space" in lines[0], lines[0]
        return lines[0]

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the children that made tuned_world (same float sums)
    try:
        _full_disk(tuned_world, photo_copy, tmp_path, monkeypatch, one_line)
    finally:
        torch.set_num_threads(threads)


def _full_disk(tuned_world, photo_copy, tmp_path, monkeypatch, one_line) -> None:
    import safetensors.torch
    from PIL import Image

    from unitune.cli import main

    work = tmp_path / "w"
    argv = ["tune", str(photo_copy), "--out", str(work / "t"), *TUNE]
    save_file = safetensors.torch.save_file

    def full_at_checkpoints(tensors, filename, metadata=None):
        if "step-" in str(filename):
            _full()
        save_file(tensors, filename, metadata)

    with monkeypatch.context() as m:  # the disk fills at the first checkpoint
        m.setattr(safetensors.torch, "save_file", full_at_checkpoints)
        assert "step-000002" in one_line(main(argv))
    assert_tune_truthful(work / "t")
    assert main(argv) == 0
    assert snapshot(work / "t") == snapshot(tuned_world)
    with monkeypatch.context() as m:
        m.setattr(Image.Image, "save", _full)
        out = tmp_path / "e"
        one_line(
            main(
                [
                    "edit",
                    str(tuned_world),
                    "a red square",
                    "--steps",
                    "1",
                    "--seeds",
                    "0",
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                    "--quiet",
                ]
            )
        )
        assert not out.exists() or list(out.iterdir()) == []
