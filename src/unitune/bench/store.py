"""Keep a long benchmark run's per-scene results in the repo, so a run can be split over many
machines and days (scripts/bench_full.sh does):

    python -m unitune.bench.store store   runs/bench-full/work docs/bench-full/scene-results
    python -m unitune.bench.store restore docs/bench-full/scene-results runs/bench-full/work

``store`` gzips each finished ``WORK/<scene>/results.json`` into ``STORE/<scene>.json.gz``
(~55 KB a full-size scene; byte-stable, so an unchanged scene makes no diff). ``restore`` puts
them back where ``unitune bench edits --work WORK`` looks, so a rerun skips those scenes: the
bench reuses a results.json only when its fingerprint (settings + model weights) matches. The
tunes and sample PNGs are not stored (hundreds of MB); only the scene's records travel.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from ..fileio import atomic_write_bytes, atomic_write_json


def _pack(data: dict) -> bytes:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return gzip.compress(raw, compresslevel=9, mtime=0)  # mtime 0: same records, same bytes


def store(work: Path, dest: Path) -> list[str]:
    """Copy every finished scene of ``work`` into ``dest``; the scenes written (new or changed)."""
    written = []
    for f in sorted(work.glob("*/results.json")):
        blob = _pack(json.loads(f.read_text()))
        target = dest / f"{f.parent.name}.json.gz"
        if not target.is_file() or target.read_bytes() != blob:
            atomic_write_bytes(target, blob)
            written.append(f.parent.name)
    return written


def restore(src: Path, work: Path) -> list[str]:
    """Put stored scenes back into ``work`` unless the same results are already there."""
    written = []
    for g in sorted(src.glob("*.json.gz")):
        data = json.loads(gzip.decompress(g.read_bytes()))
        sid = g.name.removesuffix(".json.gz")
        target = work / sid / "results.json"
        if target.is_file():
            here = json.loads(target.read_text())
            if here.get("fingerprint") == data.get("fingerprint"):
                continue
        atomic_write_json(target, data)  # as the bench itself writes results.json
        written.append(sid)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["store", "restore"])
    ap.add_argument("src", type=Path, help="store: the WORK folder; restore: the store")
    ap.add_argument("dest", type=Path, help="store: the store; restore: the WORK folder")
    a = ap.parse_args()
    if not a.src.is_dir():
        raise SystemExit(f"{a.src} is not a folder: give the bench's --work folder or the store")
    done = (store if a.action == "store" else restore)(a.src, a.dest)
    print(
        f"{a.action}: {len(done)} scene(s) written to {a.dest}"
        + (f": {' '.join(done)}" if done else "")
    )


if __name__ == "__main__":
    main()
