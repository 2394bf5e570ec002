"""`unitune serve` and `unitune batch` under the main parser: flags, checks before anything
loads, then the server or the batch."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable

from .server import ServeConfig


def add_serve_parser(sub, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    d = ServeConfig()
    s = sub.add_parser(
        "serve", help="the web app and HTTP API (Gradio) with a persistent job queue"
    )
    s.add_argument(
        "--data",
        default=d.data,
        help=f"data directory: queue, uploads, tunes, edits (default {d.data})",
    )
    s.add_argument(
        "--host", default=d.host, help="address to bind (default loopback; others need --auth)"
    )
    s.add_argument("--port", type=int, default=d.port, help=f"(default {d.port})")
    s.add_argument(
        "--auth",
        action="append",
        default=[],
        help="USER:PASSWORD login (repeatable: one per user, each sees only their jobs; "
        "required off loopback)",
    )
    s.add_argument(
        "--model",
        dest="models",
        action="append",
        help="a model the page may tune (repeatable; default: the embedded world model)",
    )
    s.add_argument(
        "--gpu-jobs",
        type=int,
        default=d.gpu_jobs,
        help="jobs run at once (each loads its own models)",
    )
    s.add_argument(
        "--max-queue", type=int, default=d.max_queue, help="waiting jobs before submits are refused"
    )
    s.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the work one request may ask for, e.g. max_seeds=8 "
        "(repeatable; keys: WorkLimits' fields; defaults: ServeConfig.limits)",
    )
    s.add_argument(
        "--job-timeout",
        type=float,
        default=d.job_timeout_s,
        metavar="SECONDS",
        help=f"stop a job running longer (default {d.job_timeout_s:g})",
    )
    add_common(s)


def serve_config(args: argparse.Namespace) -> ServeConfig:
    from ..config import parse_limits

    d = ServeConfig()
    return ServeConfig(
        data=args.data,
        host=args.host,
        port=args.port,
        auth=tuple(args.auth),
        models=tuple(args.models or d.models),
        device=args.device,
        gpu_jobs=args.gpu_jobs,
        max_queue=args.max_queue,
        limits=parse_limits(args.limit, base=d.limits),
        job_timeout_s=args.job_timeout,
    )


def cmd_serve(args: argparse.Namespace, before_load: Callable[[argparse.Namespace], None]) -> None:
    from .server import check_serve

    cfg = serve_config(args)
    check_serve(cfg)
    # Gradio keeps uploads and the copies it serves in its temp dir, and serves anything in it:
    # a private folder of this process, outside the data directory (never the jobs' files),
    # removed when the server stops
    gradio_tmp = tempfile.mkdtemp(prefix="unitune-serve-")
    os.environ["GRADIO_TEMP_DIR"] = gradio_tmp
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    before_load(args)
    from .server import Server
    from .ui import launch

    server = Server(cfg)
    if server.recovered:
        print(f"unitune: resuming jobs {server.recovered} left running by the last server")
    print(
        f"unitune: serving on http://{cfg.host}:{cfg.port} (data in {server.store.root})",
        flush=True,
    )
    try:
        launch(server, quiet=not args.verbose)
    finally:
        server.close()
        shutil.rmtree(gradio_tmp, ignore_errors=True)


def add_batch_parser(sub, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    b = sub.add_parser(
        "batch", help="tune and edit many photos from a JSONL file, locally or on Ray"
    )
    b.add_argument(
        "jobs", help="JSONL: one image per line, its tune and edits (the CLI's flags as JSON)"
    )
    b.add_argument(
        "--out", required=True, help="output folder (finished images are skipped on a rerun)"
    )
    b.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    b.add_argument("--ray", metavar="ADDRESS", help="run on Ray: auto, a cluster address, or local")
    add_common(b)
