"""The `unitune bench` subcommands: a thin layer over unitune.bench.edits."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace

from ..backbones.random_weights import ARCHS
from ..cliargs import add_speed_flags
from ..config import SWITCHES, TUNE_METHODS
from ..errors import UserError
from .speed import CASES, SpeedConfig


def add_bench_parser(sub, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """`unitune bench ...` under the main parser's subcommands (add_common: the shared flags)."""
    b = sub.add_parser("bench", help="benchmarks on the embedded world model (docs/BENCHMARKS.md)")
    bsub = b.add_subparsers(dest="bench", required=True)
    be = bsub.add_parser(
        "edits",
        help="the editing suite: SDEdit, UniTune (+interp, +prompt guidance), SINE; oracle-judged",
    )
    be.add_argument("--quick", action="store_true", help="4 scenes, small grids (< 10 min, 2 CPUs)")
    be.add_argument(
        "--preset",
        help="quick (= --quick), medium (8 scenes, ~40 min on 2 CPU cores), "
        "full (default: 40 scenes) or "
        "tune-compare (4 scenes, UniTune configs only: run it with --tune-method lora) or "
        "time-to-quality (8 scenes, each tuned with 8 schedules, edited with the defaults)",
    )
    be.add_argument(
        "--tune-method", choices=TUNE_METHODS, help="fine-tune the scenes with this method"
    )
    be.add_argument("--lora-rank", type=int, help="with --tune-method lora (default 16)")
    be.add_argument("--tune-lr", type=float, help="fine-tuning learning rate (default per method)")
    be.add_argument("--out", default="bench-edits", help="tables and plots (default bench-edits)")
    be.add_argument(
        "--work", help="tunes and per-scene results, reused on rerun (default OUT/work)"
    )
    be.add_argument("--scenes", type=int, help="number of scenes (default: 4 quick, 40 full)")
    be.add_argument(
        "--shard",
        metavar="K/N",
        help="run only scenes K, K+N, K+2N, ... (0 <= K < N): N processes with one --work split "
        "the suite; a last run without --shard writes the tables over all scenes",
    )
    add_common(be)
    bs = bsub.add_parser(
        "speed", help="unitune against diffusers on the same model: edit and tune time, peak memory"
    )
    sd = SpeedConfig()
    bs.add_argument(
        "--model", default=sd.model, help="the model to time (default: the embedded one)"
    )
    bs.add_argument(
        "--random-weights",
        choices=ARCHS,
        help="instead of --model: a full-size model of this architecture with random weights "
        "(built once under the output's work folder; no download)",
    )
    bs.add_argument("--resolution", type=int, help="pixels of tune and edit (default: the model's)")
    bs.add_argument("--steps", type=int, default=sd.steps, help="DDIM steps per edit")
    bs.add_argument("--batch", type=int, default=sd.batch, help="seeds per edit call")
    bs.add_argument(
        "--tune-steps", type=int, default=sd.tune_steps, help="timed tuning steps per round"
    )
    bs.add_argument("--tune-batch", type=int, default=sd.tune_batch, help="latents per tuning step")
    bs.add_argument("--method", choices=TUNE_METHODS, default=sd.method)
    bs.add_argument(
        "--repeats", type=int, default=sd.repeats, help="interleaved rounds per implementation"
    )
    bs.add_argument("--gradient-checkpointing", choices=SWITCHES, default=sd.gradient_checkpointing)
    bs.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    bs.add_argument(
        "--cases", type=_cases, default=sd.cases, help=f"comma list of {', '.join(CASES)}"
    )
    bs.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=sd.memory,
        help="also each implementation's peak memory, alone",
    )
    bs.add_argument("--out", default="bench-speed.json", help="results (JSON)")
    add_common(bs)
    add_speed_flags(bs)


def _cases(text: str) -> tuple[str, ...]:
    vals = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [v for v in vals if v not in CASES]
    if bad or not vals:
        raise argparse.ArgumentTypeError(
            f"unknown case {bad[0] if bad else text!r}: use {', '.join(CASES)}"
        )
    return vals


def cmd_bench(args: argparse.Namespace) -> None:
    if args.bench == "speed":
        return cmd_speed(args)
    from .config import PRESETS
    from .report import format_summary
    from .runner import run_bench

    if args.quick and args.preset not in (None, "quick"):
        raise UserError(f"--quick contradicts --preset {args.preset}", "pass only one of them")
    if args.preset is not None and args.preset not in PRESETS:
        raise UserError(f"unknown --preset {args.preset!r}", f"use one of {', '.join(PRESETS)}")
    bc = PRESETS["quick" if args.quick else args.preset or "full"]
    extra = []
    if args.tune_method and args.tune_method != "full":
        extra.append(("method", args.tune_method))
    if args.lora_rank is not None:
        if args.tune_method != "lora":
            raise UserError("--lora-rank needs --tune-method lora", "add --tune-method lora")
        extra.append(("lora_rank", args.lora_rank))
    if args.tune_lr is not None:
        extra.append(("lr", args.tune_lr))
    if extra:
        bc = replace(bc, tune_extra=tuple(extra))
    if args.scenes is not None:
        if args.scenes < 1:
            raise UserError(f"--scenes must be >= 1, got {args.scenes}", "e.g. --scenes 4")
        bc = replace(bc, n_scenes=args.scenes)
    shard = None
    if args.shard is not None:
        k, _, n = args.shard.partition("/")
        if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
            raise UserError(
                f"--shard must be K/N with 0 <= K < N, got {args.shard!r}", "e.g. --shard 0/2"
            )
        shard = (int(k), int(n))
    if not args.verbose:
        from .. import logs

        logs.quiet_libraries()
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    summary = run_bench(bc, args.out, args.work, device=args.device, log=log, shard=shard)
    if bc.schedules:
        from .time_to_quality import format_summary as format_ttq

        print(format_ttq(summary))
    else:
        print(format_summary(summary))


def cmd_speed(args: argparse.Namespace) -> None:
    from ..backbones import probe
    from .speed import run_speed

    for flag in ("steps", "batch", "tune_steps", "tune_batch", "repeats", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1", "e.g. 2")
    if args.resolution is not None and (args.resolution < 64 or args.resolution % 64):
        raise UserError(
            f"--resolution must be a positive multiple of 64, got {args.resolution}", "e.g. 256"
        )
    if not args.random_weights:
        probe(args.model)
    device = "cuda" if args.device == "cuda" else "cpu" if args.device == "cpu" else "auto"
    if device == "auto":
        from ..backbones.base import resolve_device

        device = resolve_device("auto").type
    if not args.verbose:
        from .. import logs

        logs.quiet_libraries()
    sc = SpeedConfig(
        model=args.model,
        random_weights=args.random_weights,
        device=device,
        resolution=args.resolution,
        steps=args.steps,
        batch=args.batch,
        tune_steps=args.tune_steps,
        tune_batch=args.tune_batch,
        method=args.method,
        repeats=args.repeats,
        gradient_checkpointing=args.gradient_checkpointing,
        compile=args.compile,
        channels_last=args.channels_last,
        tf32=args.tf32,
        threads=args.threads,
        cases=args.cases,
        memory=args.memory,
    )
    run_speed(sc, args.out, log=(lambda s: None) if args.quiet else print)
    print(args.out)
