"""`unitune bench speed`: unitune against diffusers on the same model, weights and settings.

For each case (``edit``: 50 DDIM steps with CFG from noise; ``edit-t0``: from t0 0.9;
``tune``: a tuning step), one child process times BOTH implementations interleaved (so the
ratio is taken on the same machine state), then one child per implementation measures its peak
memory alone (bench.speed_runs says exactly what each runs). The tune case also weighs the tune
folder it wrote: one checkpoint, and the folder the default schedule leaves (``TuneConfig``'s
``save_at``; the exact resume state is deleted when a run completes).

``--random-weights sd15|sdxl`` times the real architectures with no download: a full-size
model with random weights is built once under the work folder (backbones.random_weights).
The parent writes medians, spreads and ratios (unitune / diffusers: below 1 unitune is faster).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..config import DEFAULT_MODEL, TUNE_SCHEDULES, TuneConfig
from ..tunefolder import RESUME

CASES = ("edit", "edit-t0", "tune")
IMPLS = ("unitune", "diffusers")


@dataclass(frozen=True)
class SpeedConfig:
    """What `unitune bench speed` measures."""

    model: str = DEFAULT_MODEL  # --model reference (the embedded model by default)
    random_weights: str | None = None  # sd15 / sdxl: a full-size random model instead of --model
    device: str = "cpu"  # cpu or cuda
    resolution: int | None = None  # pixels of tune and edit; None: the model's native size
    steps: int = 50  # DDIM steps of an edit
    batch: int = 2  # seeds per edit call; images per second = batch / seconds
    tune_steps: int = 6  # timed tuning steps per round (after one untimed)
    tune_batch: int = 4  # copies of the latent per tuning step (UniTune: 4)
    method: str = "full"  # full or lora tuning
    repeats: int = 3  # interleaved rounds per implementation (after one warm-up each)
    gradient_checkpointing: str = "auto"  # as `unitune tune`: auto = on for CUDA only
    compile: bool = False  # torch.compile the denoiser (both implementations)
    channels_last: bool = False  # channels-last UNet weights (both implementations)
    tf32: bool = False  # CUDA: TF32 matmuls (process-wide, so both implementations)
    threads: int | None = None  # torch intra-op threads in the children; None: torch's default
    cases: tuple[str, ...] = CASES  # which of CASES to run
    memory: bool = True  # also each implementation's peak memory, alone in a child process


def _child(mode: str, case: str, impl: str, sc: SpeedConfig, work: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "unitune.bench.speed_runs",
        mode,
        case,
        impl,
        json.dumps(asdict(sc)),
        str(work),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{mode} {case}/{impl} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _stats(t: list[float]) -> dict:
    return {
        "median_s": round(statistics.median(t), 4),
        "min_s": round(min(t), 4),
        "max_s": round(max(t), 4),
        "n": len(t),
    }


def _mb(p: Path) -> float:
    return round(p.stat().st_size / 1e6, 2)


def folder_sizes(tune_dir: Path) -> dict:
    """A finished one-checkpoint tune folder -> its checkpoint's size and the size of a folder
    with the default schedule's checkpoints (everything else in the folder counted once)."""
    ckpts = sorted((tune_dir / "checkpoints").glob("step-*.safetensors"))
    files = [p for p in tune_dir.rglob("*") if p.is_file()]
    other = sum(p.stat().st_size for p in files if p not in ckpts) / 1e6
    one = _mb(ckpts[-1])
    n = len(TUNE_SCHEDULES["full"].save_at)
    return {
        "checkpoint_mb": one,
        "other_files_mb": round(other, 2),
        "resume_state_left": (tune_dir / RESUME).exists(),
        f"default_schedule_{n}_checkpoints_mb": round(other + n * one, 1),
    }


def prepare(sc: SpeedConfig, work: Path) -> SpeedConfig:
    """The photo, the model (a random-weights build if asked) and an untuned tune folder
    (checkpoint 0: the pretrained model) that both implementations edit from. Run in a child
    process (``_child("prepare", ...)``) so the parent never holds a model while others time."""
    from ..backbones.random_weights import build
    from ..demo import SCENE
    from ..tune import tune
    from ..world.render import render, to_pil

    work.mkdir(parents=True, exist_ok=True)
    if sc.random_weights:
        sc = replace(sc, model=str(build(sc.random_weights, work / f"random-{sc.random_weights}")))
    to_pil(render([SCENE], 256)[0]).save(work / "photo.png")
    tune(
        work / "photo.png",
        work / "untuned",
        TuneConfig(steps=0, resolution=sc.resolution),
        model=sc.model,
        device=sc.device,
        progress=False,
        overwrite=True,
    )
    return sc


def run_speed(sc: SpeedConfig, out: str | Path, log=print) -> dict:
    """Every case timed (interleaved) and weighed; the summary, also written to ``out``."""
    from ..fileio import atomic_write_json

    out = Path(out)
    work = out.parent / f".{out.stem}-work"
    work.mkdir(parents=True, exist_ok=True)
    run = SpeedConfig(**{**asdict(sc), **_child("prepare", "-", "-", sc, work)})
    run = replace(run, cases=tuple(run.cases))  # JSON made the tuple a list
    results: dict[str, dict] = {}
    from ..backbones import probe

    img2img = len(probe(run.model).family.pipelines) > 1
    for case in sc.cases:
        if case == "edit-t0" and not img2img:
            log(f"{case:8} skipped: the family has no img2img pipeline to time against")
            results[case] = {"skipped": "no img2img pipeline"}
            continue
        m = _child("time", case, "both", run, work)["times"]
        res = {i: _stats(m[i]) for i in IMPLS}
        res["ratio"] = round(res["unitune"]["median_s"] / res["diffusers"]["median_s"], 3)
        # the ratio of each interleaved pair: how much of the ratio is the machine's noise
        pairs = [u / d for u, d in zip(m["unitune"], m["diffusers"])]
        res["pair_ratios"] = {"min": round(min(pairs), 3), "max": round(max(pairs), 3)}
        if case == "tune":
            res["tune_folder"] = folder_sizes(work / "t")
        for i in IMPLS:
            s = res[i]
            log(
                f"{case:8} {i:9} median {s['median_s']:.4f} s  "
                f"(min {s['min_s']:.4f}, max {s['max_s']:.4f}, n {s['n']})"
            )
        if sc.memory:
            for i in IMPLS:
                res[i]["peak_mb"] = _child("memory", case, i, run, work)["peak_mb"]
            log(
                f"{case:8} peak memory unitune {res['unitune']['peak_mb']:.0f} MB, "
                f"diffusers {res['diffusers']['peak_mb']:.0f} MB"
            )
        log(
            f"{case:8} ratio unitune / diffusers: {res['ratio']:.3f} "
            f"(pairs {res['pair_ratios']['min']:.3f}-{res['pair_ratios']['max']:.3f})"
        )
        if "tune_folder" in res:
            log(f"{case:8} tune folder: {res['tune_folder']}")
        results[case] = res
    summary = {
        "config": asdict(sc),
        "command": " ".join(["unitune", "bench", "speed", *flags(sc)]),
        "unit": {"edit": "s per image", "tune": "s per step"},
        "results": results,
    }
    atomic_write_json(out, summary)
    return summary


def flags(sc: SpeedConfig) -> list[str]:
    """The command-line flags that reproduce ``sc`` (defaults left out)."""
    d, out = SpeedConfig(), []
    for k, v in asdict(sc).items():
        if v == getattr(d, k):
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else f"--no-{k.replace('_', '-')}")
        elif isinstance(v, tuple):
            out += [flag, ",".join(map(str, v))]
        else:
            out += [flag, str(v)]
    return out
