"""Crash-safe file writes: every file and folder unitune writes appears complete or not at all.

- ``atomic_write``: write a hidden temp beside the target (``.NAME.PID.XXXX.tmp``), fsync it,
  rename it onto the target, fsync the folder. A crash (kill -9, power loss) leaves the previous
  file, or none, never a truncated one.
- ``new_dir`` + ``install_dir``: a folder is built beside its target (``.NAME.partial-PID-XXXX``)
  and moved in by one rename; an existing target is swapped out in the same step (Linux
  ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames that ``recover`` completes), so at any
  moment the path holds the old folder or the new one, complete.
- ``clean_leftovers``: removes the temps of killed runs (their process id is no longer alive),
  so a rerun in a folder starts clean.
- An ``OSError`` while writing (full disk, no permission, read-only file system) becomes a
  one-line ``UserError`` saying what could not be written, where, and what to do.

Test hook: ``UNITUNE_CRASH_AT=N`` kills the process (SIGKILL, nothing flushed or cleaned) at the
N-th file event (1-based): an event is a temp file completely written but not yet renamed
(``written``), a rename done (``renamed``), a folder swapped in (``installed``), a file or folder
removed (``removed``). ``UNITUNE_CRASH_LOG=FILE`` appends every event to FILE, one
``<kind> <path>`` a line, so a test can count them (tests/test_crash.py kills at each in turn).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError

_events = 0


def file_event(kind: str, path: str | os.PathLike) -> None:
    """Count one file event for the crash test hook (module docstring); a no-op otherwise."""
    global _events
    log, at = os.environ.get("UNITUNE_CRASH_LOG"), os.environ.get("UNITUNE_CRASH_AT")
    if not log and not at:
        return
    _events += 1
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{kind} {path}\n")
    if at and _events == int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def write_error(e: OSError, path: str | os.PathLike, what: str = "write") -> UserError:
    """The one-line error for an OSError while writing ``path``."""
    where = Path(path).parent
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return UserError(
            f"cannot {what} {path}: the disk is full ({e.strerror})",
            f"free space on the disk of {where} (or pass another output folder) "
            "and run it again: a tune resumes",
        )
    if e.errno in (errno.EACCES, errno.EPERM):
        return UserError(
            f"cannot {what} {path}: permission denied",
            f"pass an output folder you can write to, or fix the permissions of {where}",
        )
    if e.errno == errno.EROFS:
        return UserError(
            f"cannot {what} {path}: the file system is read-only",
            "pass an output folder on a writable disk",
        )
    return UserError(
        f"cannot {what} {path} ({e.strerror or type(e).__name__})",
        f"check the disk and folder {where}, then run it again",
    )


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str = "write") -> Iterator[None]:
    """Turn an OSError raised inside (with an errno: the OS refused) into ``write_error``."""
    try:
        yield
    except UserError:
        raise
    except OSError as e:
        if e.errno is None:
            raise
        raise write_error(e, path, what) from e
    except Exception as e:  # safetensors' writer reports the OS error in its message only
        code = re.search(r"\bcode: (\d+)", str(e)) if "IoError" in str(e) else None
        if code is None:
            raise
        err = int(code[1])
        raise write_error(OSError(err, os.strerror(err)), path, what) from e


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in folder ``path`` durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``."""
    path = Path(path)
    tmp = None
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
        os.close(fd)
        try:
            write(tmp)
            _fsync_file(tmp)
            file_event("written", path)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)
    file_event("renamed", path)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, _w)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(
    tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    from safetensors.torch import save_file

    # safetensors refuses shared / non-contiguous storage; checkpoints are small enough to copy
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def atomic_save_image(img, path: str | os.PathLike, **kw) -> Path:
    """A PIL image, written atomically as PNG (``kw``: PIL's save options, e.g. pnginfo)."""
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG", **kw))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove_file(path: str | os.PathLike) -> None:
    """Delete a file (a no-op if it is gone), durably."""
    path = Path(path)
    with writing(path, "delete"):
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)
    file_event("removed", path)


# --- folders ---------------------------------------------------------------------------------
_PARTIAL = ".partial-"
_TRASH = ".trash-"


def new_dir(path: str | os.PathLike) -> Path:
    """An empty hidden folder beside ``path`` to build its new content in (``install_dir``)."""
    path = Path(path)
    with writing(path, "create"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{path.name}{_PARTIAL}{os.getpid()}-", dir=path.parent)
        )
        umask = os.umask(0o022)  # mkdtemp makes it private: give it a plain folder's mode
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        return tmp


def _sync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            _fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # this file system cannot: two renames, completed by `recover`
    raise OSError(err, os.strerror(err), str(b))


def install_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the folder ``tmp`` (from ``new_dir``) to ``path``, replacing what is there (a folder)
    in one step; the old folder is then deleted. fsyncs the new folder's files first."""
    tmp, path = Path(tmp), Path(path)
    with writing(path):
        _sync_tree(tmp)
        file_event("written", path)
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            os.replace(tmp, path)  # onto nothing, or onto an empty folder
            fsync_dir(path.parent)
            file_event("installed", path)
            return path
        if _exchange(tmp, path):  # tmp now holds the old folder
            fsync_dir(path.parent)
            file_event("installed", path)
            old = tmp
        else:
            old = path.parent / tmp.name.replace(_PARTIAL, _TRASH, 1)
            os.replace(path, old)  # a kill here: `recover` puts it back
            file_event("renamed", old)
            os.replace(tmp, path)
            fsync_dir(path.parent)
            file_event("installed", path)
        _remove_tree(old)
    return path


def _remove_tree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
    file_event("removed", p)


_LEFTOVER = re.compile(
    r"^\.(?P<name>.+?)(?:\.(?P<pid>\d+)\.[^.]+\.tmp|\.(?P<kind>partial|trash)-(?P<dpid>\d+)-.+)$"
)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: someone else's live process
        return True
    return True


def recover(path: str | os.PathLike) -> None:
    """Finish or undo a folder replacement a killed run left half done (the two-rename path of
    ``install_dir``): ``path`` missing with its old folder in the trash puts the old one back.
    Then removes the dead runs' temps beside ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    leftovers = _leftovers_in(path.parent, path.name)
    if not path.exists():
        trash = [p for kind, p in leftovers if kind == "trash"]
        if trash:
            with writing(path):
                os.replace(trash[0], path)
                fsync_dir(path.parent)
            file_event("renamed", path)
    clean_leftovers(path.parent, path.name)


def _leftovers_in(folder: Path, name: str | None) -> list[tuple[str, Path]]:
    out = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return out
    for e in entries:
        m = _LEFTOVER.match(e.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        pid = int(m["pid"] or m["dpid"])
        if _alive(pid):
            continue
        out.append((m["kind"] or "tmp", Path(e.path)))
    return sorted(out)


def clean_leftovers(
    folder: str | os.PathLike, name: str | None = None, recursive: bool = False
) -> list[Path]:
    """Delete the hidden temp files and folders that killed runs left in ``folder`` (only those
    for ``name`` if given; in every subfolder too with ``recursive``). Returns what went."""
    folder = Path(folder)
    gone = []
    for _, p in _leftovers_in(folder, name):
        if p.is_dir() and not p.is_symlink():
            _remove_tree(p)
        else:
            remove_file(p)
        gone.append(p)
    if recursive:
        for sub in sorted(folder.iterdir()) if folder.is_dir() else ():
            if sub.is_dir() and not sub.is_symlink() and not sub.name.startswith("."):
                gone += clean_leftovers(sub, recursive=True)
    return gone
