"""The `unitune` command: a thin typed layer over the library.

Bad input exits with status 2 and one line on stderr naming the problem and the fix, checked
before any model loads (unitune.checks) and before torch is even imported, so it takes a
fraction of a second. Third-party logs are off unless --verbose (unitune.logs).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import fields, replace
from pathlib import Path

from . import logs
from .app.cli import add_batch_parser, add_serve_parser, cmd_serve
from .bench.cli import add_bench_parser, cmd_bench
from .cliargs import (
    Parser,
    acceleration,
    add_common,
    add_edit_flags,
    add_export_parser,
    add_schedule_flags,
    add_speed_flags,
    export_config,
    floats,
    ints,
)
from .config import (
    DEFAULT_MODEL,
    DENSITIES,
    GRID_ROWS,
    PRECISIONS,
    RESIZE_MODES,
    SWITCHES,
    TUNE_METHODS,
    TUNE_PRESETS,
    TUNE_SCHEDULES,
    EditConfig,
    GridConfig,
    RankConfig,
    TuneConfig,
    WorkLimits,
    check_prompt,
    parse_limits,
    tune_preset,
)
from .errors import UnituneWarning, UserError


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="unitune", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("tune", help="fine-tune a model on one image")
    td = TuneConfig()
    t.add_argument("image")
    t.add_argument("--out", required=True, help="tune folder (resumed if it exists)")
    t.add_argument(
        "--model", default=DEFAULT_MODEL, help="hub id, diffusers folder, .safetensors, or world"
    )
    t.add_argument("--model-config", help="diffusers folder giving the config of a single file")
    t.add_argument(
        "--vae", help="another VAE (folder or .safetensors), e.g. an fp16-fixed SDXL VAE"
    )
    # flags a preset sets default to SUPPRESS: absent from args unless given, so they win over it
    keep = argparse.SUPPRESS
    t.add_argument(
        "--preset",
        choices=sorted(TUNE_PRESETS),
        default=None,
        help="a paper's settings instead of the defaults (full: 32 steps, batch 4, lr 1e-4): "
        "unitune (128 steps, checkpoints 16,32,64,128) or sine (800 steps, batch 1, lr 1e-6; "
        "10000 steps with --patches; needs --class-noun)",
    )
    t.add_argument(
        "--steps",
        type=int,
        default=keep,
        help=f"fine-tuning steps (full {TUNE_SCHEDULES['full'].steps}, lora "
        f"{TUNE_SCHEDULES['lora'].steps})",
    )
    t.add_argument("--save-at", type=ints, default=keep, help="comma list of steps")
    t.add_argument("--batch-size", type=int, default=keep, help=f"({td.batch_size})")
    t.add_argument(
        "--lr", type=float, default=keep, help="default: the model's (SD 1e-4 full, 3e-4 lora)"
    )
    t.add_argument(
        "--method",
        choices=TUNE_METHODS,
        default=td.method,
        help="default: the model's (full for SD, lora for SD3 / FLUX)",
    )
    t.add_argument("--lora-rank", type=int, default=td.lora_rank, help="default: the model's (16)")
    t.add_argument(
        "--lora-conv",
        action="store_true",
        help="LoRA on the ResNet convs (UNets) / feed-forward layers (transformers) too",
    )
    t.add_argument(
        "--timestep-density",
        choices=DENSITIES,
        default=td.timestep_density,
        help="training timesteps (default: the model's; SD3 logit_normal)",
    )
    t.add_argument("--rare-token", default=td.rare_token)
    t.add_argument(
        "--base-prompt",
        default=td.base_prompt,
        help="tune on '<rare> <base prompt>' (as is if it has <rare>)",
    )
    t.add_argument("--class-noun", default=td.class_noun, help="SINE: 'a photo of a <rare> <noun>'")
    t.add_argument("--seed", type=int, default=td.seed)
    t.add_argument("--resize", choices=RESIZE_MODES, default=td.resize)
    t.add_argument("--resolution", type=int, default=td.resolution)
    t.add_argument("--mixed-precision", choices=PRECISIONS, default=td.mixed_precision)
    t.add_argument("--gradient-checkpointing", choices=SWITCHES, default=td.gradient_checkpointing)
    t.add_argument(
        "--patches",
        action="store_true",
        default=keep,
        help="SINE patch-based fine-tuning: random crops + a positional embedding of the crop",
    )
    t.add_argument(
        "--patch-min-frac",
        type=float,
        default=keep,
        help=f"--patches: crop sides uniform in [FRAC, 1] x the image's ({td.patch_min_frac})",
    )
    t.add_argument(
        "--cascade",
        action=argparse.BooleanOptionalAction,
        default=td.cascade,
        help="pixel cascades (DeepFloyd IF): tune the super-resolution stage too",
    )
    t.add_argument(
        "--sr-model",
        default=td.sr_model,
        help="that stage's model (default: the one the base names; world-if: world-if-sr)",
    )
    t.add_argument("--overwrite", action="store_true", help="discard an existing tune folder")
    t.add_argument(
        "--keep-resume",
        action="store_true",
        help="keep checkpoints/resume.safetensors (exact training state) after the run",
    )
    t.add_argument(
        "--preview",
        metavar="PROMPT",
        help="render this edit at every saved checkpoint while tuning goes on (edit defaults, "
        "seeds 0,1; its own copy of the model); prints each preview's paths as it is written",
    )
    add_schedule_flags(t)
    add_common(t)
    add_speed_flags(t)

    e = sub.add_parser("edit", help="sample edits from a tune folder")
    e.add_argument("tune")
    e.add_argument(
        "prompt",
        nargs="?",
        help="edit prompt (unitune: the rare token is prepended; "
        "sine: as is, to the pretrained model)",
    )
    e.add_argument("--out", default="edits", help="output folder")
    e.add_argument("--params", metavar="PNG", help="reproduce an earlier output from its sidecar")
    e.add_argument(
        "--guide",
        dest="guides",
        action="append",
        metavar="TUNE_DIR:PROMPT:WEIGHT",
        help="multi-model guidance, repeatable: add WEIGHT x (eps(TUNE_DIR's tuned model, PROMPT)"
        " - eps_u) to the primary; TUNE_DIR may be 'pretrained' or end in @STEP; PROMPT verbatim",
    )
    add_edit_flags(e, EditConfig())
    e.add_argument(
        "--fidelity",
        type=float,
        help="one knob in [0,1] (0 = most expressive, 1 = most faithful) that sets --checkpoint, "
        "--t0 and --cfg along the benchmark's measured frontier (assets/fidelity_map.json)",
    )
    e.add_argument(
        "--best-of",
        type=int,
        default=0,
        metavar="N",
        help="sample N seeds from the first of --seeds, save the one that best balances the edit "
        "(a diffusion-classifier score) against LPIPS to the base outside the edit "
        "(unitune/rank.py)",
    )
    e.add_argument("--sweep-t0", type=floats, help="--best-of: also sweep these t0 values")
    e.add_argument("--sweep-checkpoints", type=ints, help="--best-of: also sweep these checkpoints")
    e.add_argument(
        "--balance",
        type=float,
        default=RankConfig.balance,
        help=f"--best-of: weight of fidelity ({RankConfig.balance:g})",
    )
    e.add_argument("--keep-all", action="store_true", help="--best-of: save every candidate")
    e.add_argument(
        "--no-metadata",
        action="store_true",
        help="write the PNGs without parameters (the .json sidecar beside each stays, for "
        "--params; shared PNGs otherwise carry names, never your paths)",
    )
    add_common(e)
    add_speed_flags(e)

    g = sub.add_parser("grid", help="contact sheet over checkpoints x t0 (x seeds)")
    gd = GridConfig()
    g.add_argument("tune")
    g.add_argument("prompt")
    g.add_argument(
        "--checkpoints", type=ints, default=gd.checkpoints, help="default: every saved one"
    )
    g.add_argument("--t0", dest="t0s", type=floats, default=gd.t0s, help="comma list")
    g.add_argument("--seeds", type=ints, default=gd.seeds)
    g.add_argument("--cell", type=int, default=gd.cell, help="cell size in pixels")
    g.add_argument(
        "--rows",
        choices=GRID_ROWS,
        default=gd.rows,
        help="rows vary the checkpoint, or a cascade's SR checkpoint",
    )
    g.add_argument("--out", default="grid.png")
    add_edit_flags(g, EditConfig(), grid=True)
    add_common(g)
    add_speed_flags(g)

    d = sub.add_parser(
        "demo", help="offline: tune the embedded model on a bundled scene, edit it, judge the edits"
    )
    d.add_argument("--out", default="unitune-demo", help="output folder (default unitune-demo)")
    d.add_argument("--method", choices=TUNE_METHODS, default=TuneConfig().method)
    d.add_argument("--seeds", type=ints, default=None, help="edit seeds (default 0,1,2,3)")
    add_common(d)
    add_export_parser(sub)
    add_bench_parser(sub, add_common)
    add_serve_parser(sub, add_common)
    add_batch_parser(sub, add_common)
    sub.choices["batch"].add_argument(
        "--limit",
        dest="limits",
        action="append",
        metavar="KEY=VALUE",
        help="a work limit of each line, repeatable: KEY a WorkLimits field (max_seeds, "
        "max_sample_steps, max_tune_steps, max_side, max_prompt_chars, ...), VALUE an integer",
    )
    return ap


def _edit_config(args: argparse.Namespace, **over) -> EditConfig:
    names = {f.name for f in fields(EditConfig)}
    vals = {k: v for k, v in vars(args).items() if k in names}
    vals["rare_token"] = not args.no_rare_token
    vals["guides"] = tuple(vals.get("guides") or ())  # --guide is only on `edit`
    vals.update(over)
    return replace(EditConfig(), **vals)


def cmd_tune(args: argparse.Namespace) -> None:
    from .checks import check_tune

    names = {f.name for f in fields(TuneConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    td = TuneConfig()
    over = tune_preset(
        args.preset,
        patches=given.get("patches", td.patches),
        method=given.get("method", td.method),
    )
    cfg = replace(td, **{**over, **given})
    check_tune(
        args.image,
        args.out,
        cfg,
        args.model,
        args.model_config,
        args.overwrite,
        args.vae,
        preset=args.preset,
    )
    if args.preview is not None:
        check_prompt(args.preview, what="--preview")
    _before_load(args)
    from .tune import tune

    previews = _previewer(args) if args.preview is not None else None
    try:
        folder = tune(
            args.image,
            args.out,
            cfg,
            model=args.model,
            device=args.device,
            overwrite=args.overwrite,
            progress=not args.quiet,
            model_config=args.model_config,
            vae=args.vae,
            accel=acceleration(args),
            keep_resume=args.keep_resume,
            preset=args.preset,
            on_checkpoint=previews.submit if previews is not None else None,
        )
    finally:
        if previews is not None:  # the previews of the saved checkpoints still finish
            previews.close()
    ck = folder.manifest.checkpoints
    losses = ", ".join(f"{s}: {ck[s].loss:.4f}" for s in sorted(ck))
    print(f"tune folder: {folder.path}  checkpoints (mean loss): {losses or 'none'}")


def _previewer(args: argparse.Namespace):
    """`tune --preview`: a Previewer printing each checkpoint's preview paths as they come."""
    from .preview import Previewer

    def show(step: int, paths: list) -> None:
        print(f"preview at step {step}: " + " ".join(map(str, paths)), flush=True)

    def failed(step: int, e: Exception) -> None:
        print(f"unitune: warning: the preview at step {step} failed: {e}", file=sys.stderr)

    return Previewer(args.out, args.preview, args.device, on_preview=show, on_error=failed)


def _before_load(args: argparse.Namespace) -> None:
    """Every argument is checked: the device (this imports torch), then quiet the libraries."""
    from .backbones.base import resolve_device

    resolve_device(args.device)
    if not args.verbose:
        logs.quiet_libraries()


def cmd_edit(args: argparse.Namespace) -> None:
    from .checks import check_best_of, check_edit, check_edit_request, check_fidelity, check_out
    from .pngmeta import edit_config_from_params, read_sidecar

    check_edit_request(args.prompt, args.params)
    only_seed = None  # --params: keep only the recorded image of the re-run batch
    if args.params:
        params = read_sidecar(args.params)
        prompt, cfg, mask = edit_config_from_params(params)
        only_seed = int(params["seed"])
    else:
        prompt, cfg, mask = args.prompt, _edit_config(args), args.mask
    sweeping = bool(args.sweep_t0 or args.sweep_checkpoints or args.keep_all)
    check_best_of(
        args.best_of,
        params=bool(args.params),
        tune_dir=args.tune,
        sweeping=sweeping,
        balance=args.balance,
        route=cfg.route,
    )
    if args.fidelity is not None:
        explicit = [f"--{k}" for k in ("checkpoint", "t0", "cfg") if k in vars(args)]
        check_fidelity(args.fidelity, explicit, bool(args.params))
        from .checks import open_tune
        from .fidelity_knob import apply_fidelity

        steps = set(open_tune(args.tune).checkpoints)
        cfg = apply_fidelity(cfg, args.fidelity, steps)
        print(
            f"--fidelity {args.fidelity:g}: checkpoint {cfg.checkpoint}, t0 {cfg.t0:g}, "
            f"CFG {cfg.cfg:g}",
            file=sys.stderr,
        )
    check_edit(
        args.tune,
        cfg,
        mask,
        tuple(args.sweep_checkpoints or ()),
        args.vae,
        prompt=prompt,
        t0s=tuple(args.sweep_t0 or ()),
    )
    check_out(args.out, "folder")
    _before_load(args)
    from .edit import Editor
    from .outputs import save_edit

    ed = Editor(
        args.tune, args.device, vae=args.vae, offload=args.offload, accel=acceleration(args)
    )
    out, meta = Path(args.out), not args.no_metadata
    if args.best_of:
        from .rank import best_of

        sweep = [{"t0": t} for t in args.sweep_t0 or ()]
        if args.sweep_checkpoints:
            sweep = [{**s, "checkpoint": c} for c in args.sweep_checkpoints for s in sweep or [{}]]
        res, ranking, labels = best_of(
            ed,
            prompt,
            cfg,
            args.best_of,
            sweep,
            mask,
            RankConfig(balance=args.balance),
            not args.quiet,
        )
        print(ranking.table(labels), file=sys.stderr)
        picks = ranking.order if args.keep_all else ranking.order[:1]
        for i in picks:
            print(save_edit(res.images[i], res.params[i], out, res.mask, meta))
        return
    res = ed.edit(prompt, cfg, mask=mask, progress=not args.quiet)
    for img, p in zip(res.images, res.params, strict=True):
        if only_seed is None or p["seed"] == only_seed:
            print(save_edit(img, p, out, res.mask, meta))


def cmd_grid(args: argparse.Namespace) -> None:
    from .checks import check_grid, check_out_file

    cfg = _edit_config(args)
    gcfg = GridConfig(
        checkpoints=args.checkpoints, t0s=args.t0s, seeds=args.seeds, cell=args.cell, rows=args.rows
    )
    check_grid(args.tune, cfg, gcfg, args.mask, args.vae, prompt=args.prompt)
    check_out_file(args.out, ".png")
    _before_load(args)
    from .edit import Editor
    from .outputs import render_grid

    ed = Editor(
        args.tune, args.device, vae=args.vae, offload=args.offload, accel=acceleration(args)
    )
    path = render_grid(
        ed, args.prompt, cfg, gcfg, Path(args.out), mask=args.mask, progress=not args.quiet
    )[0]
    print(path)


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import DEMO_EDIT

    edit_cfg = replace(DEMO_EDIT, seeds=args.seeds) if args.seeds else DEMO_EDIT
    from .checks import check_out

    edit_cfg.validate()
    check_out(args.out, "folder")
    _before_load(args)
    from .demo import print_summary, run_demo

    summary = run_demo(
        args.out,
        device=args.device,
        progress=not args.quiet,
        tune_cfg=replace(TuneConfig(), method=args.method),
        edit_cfg=edit_cfg,
    )
    print_summary(summary)


def cmd_export(args: argparse.Namespace) -> None:
    from .checks import check_export

    xcfg = export_config(args)
    check_export(args.tune, args.format, args.out, args.checkpoint, args.rank, args.overwrite, xcfg)
    _before_load(args)
    from .export import export

    res = export(
        args.tune,
        args.format,
        args.out,
        args.checkpoint,
        args.rank,
        args.overwrite,
        args.device,
        xcfg,
    )
    for note in res.notes:
        print(f"unitune: note: {note}", file=sys.stderr)
    print(res.path)
    if res.url:
        print(res.url)


def cmd_bench_checked(args: argparse.Namespace) -> None:
    """`unitune bench`, its output paths checked first (a folder for edits, a file for speed)."""
    from .checks import check_out

    if args.bench == "edits":
        check_out(args.out, "folder")
        if getattr(args, "work", None):
            check_out(args.work, "folder", "--work")
    elif getattr(args, "out", None):
        check_out(args.out, "file")
    cmd_bench(args)


def cmd_batch(args: argparse.Namespace) -> None:
    """`unitune batch JOBS --out DIR`: the file, the folder, the workers and the --limit work
    limits checked before anything loads; each line is then checked alone (unitune.batch)."""
    from .batch import run_batch
    from .checks import check_batch

    limits = parse_limits(args.limits) if args.limits else WorkLimits()
    check_batch(args.jobs, args.out, args.workers)
    _before_load(args)
    m = run_batch(
        args.jobs,
        args.out,
        args.workers,
        args.ray,
        args.device,
        progress=not args.quiet,
        limits=limits,
    )
    for r in m["results"]:
        if r["status"] == "failed":
            print(f"unitune: line {r['line']} failed: {r['error']}", file=sys.stderr)
    print(f"{m['done']} done, {m['failed']} failed: {Path(args.out) / 'manifest.json'}")


COMMANDS = {
    "tune": cmd_tune,
    "edit": cmd_edit,
    "grid": cmd_grid,
    "demo": cmd_demo,
    "export": cmd_export,
    "bench": cmd_bench_checked,
    "serve": lambda args: cmd_serve(args, _before_load),
    "batch": cmd_batch,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad argument (its one line is printed) or --help
        return int(e.code or 0)
    logs.configure(args.verbose)

    default_show = warnings.showwarning

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UnituneWarning):
            print(f"unitune: warning: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_warning
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        print(f"unitune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unitune: interrupted (checkpoints written so far are intact)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
