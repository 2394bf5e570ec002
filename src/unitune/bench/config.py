"""Sizes and grids of ``unitune bench edits``: :class:`BenchConfig` and its presets.

``FULL`` is the issue's size, ``QUICK`` the CI size, ``MEDIUM`` what 2 CPU cores run in ~40
minutes, and ``TUNE_COMPARE`` the LoRA vs full subset; docs/BENCHMARKS.md has every grid and
its run time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from itertools import product
from typing import Any

from ..config import DEFAULT_MODEL, EditConfig, TuneConfig
from ..world.edits import KINDS
from .suite import BACKGROUND_MASKS, MASK_MARGIN, SUITE_SEED

# what the edit keeps, on top of SDEdit (the untuned model) and UniTune: the inversion start
# (plain, and with negative-prompt inversion: "-neg"), DiffEdit's automatic mask (its own cut,
# and Otsu's: "-otsu"), and both
KEEP_METHODS = (
    "sdedit+inversion",
    "sdedit+inversion-neg",
    "sdedit+automask",
    "unitune+inversion",
    "unitune+inversion-neg",
    "unitune+automask",
    "unitune+inversion+automask",
    "unitune+inversion-neg+automask",
    # the automatic mask cut by Otsu's rule instead of DiffEdit's (automask.py: DiffEdit's cannot
    # mark more than 2/3 of the image, a background edit's region)
    "sdedit+automask-otsu",
    "unitune+automask-otsu",
    "unitune+inversion-neg+automask-otsu",
    # the global / local route (route.py, `edit --route auto`): a local edit samples
    # negative-prompt inversion inside the automatic mask, a global one the config of
    # ``route_unitune``
    "unitune+route",
)


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(problem)


@dataclass(frozen=True)
class Schedule:
    """One tune schedule of the time-to-quality study (bench/time_to_quality.py): a tune of each
    scene with these TuneConfig overrides, edited with `unitune edit`'s defaults at
    ``checkpoints`` (empty: at the last one the run saved, e.g. where auto_stop stopped)."""

    name: str
    tune: tuple[tuple[str, Any], ...]  # TuneConfig overrides, e.g. (("lr", 3e-4),)
    checkpoints: tuple[int, ...] = ()


_EVERY8 = (8, 16, 24, 32, 48, 64, 96, 128)
# the study's schedules: the paper's (whose checkpoints are also the shorter constant-rate runs
# exactly: each step's draws do not depend on --steps), a higher constant rate, warm-up + cosine
# decay at that rate over 16 and 32 steps, timesteps only up to the default t0 (0.9), LoRA at
# its default rate (3e-4: the best of 3e-4 / 1e-3 / rank 64 in docs/tune_compare*.json), and
# the automatic stop at patience 1 and 2 (probes every 8 steps)
SCHEDULES = (
    # checkpoint 0 (the pretrained model, the rare token in the prompt) is the control: a row
    # the study cannot tell from it is not resolved at this size
    Schedule("paper", (("steps", 128), ("save_at", _EVERY8)), (0, *_EVERY8)),
    Schedule("lr3e-4", (("steps", 64), ("save_at", _EVERY8[:6]), ("lr", 3e-4)), _EVERY8[:6]),
    Schedule(
        "cos16-3e-4",
        (("steps", 16), ("save_at", (16,)), ("lr", 3e-4), ("lr_schedule", "cosine"))
        + (("warmup_steps", 2),),
        (16,),
    ),
    Schedule(
        "cos32-3e-4",
        (("steps", 32), ("save_at", (16, 32)), ("lr", 3e-4), ("lr_schedule", "cosine"))
        + (("warmup_steps", 4),),
        (16, 32),
    ),
    Schedule(
        "tmax0.9",
        (("steps", 64), ("save_at", _EVERY8[1:6]), ("max_timestep", 0.9)),
        _EVERY8[1:6],
    ),
    Schedule(
        "lora",
        (("steps", 128), ("save_at", (16, 32, 64, 128)), ("method", "lora")),
        (16, 32, 64, 128),
    ),
    Schedule("auto-stop1", (("steps", 128), ("save_at", (128,)), ("auto_stop", 1))),
    Schedule("auto-stop2", (("steps", 128), ("save_at", (128,)), ("auto_stop", 2))),
)
# the check at 40 scenes of what the 8-scene study found (docs/BENCHMARKS.md "Time to quality"):
# the default 32-step tune (its checkpoint 32 is the paper run's bit for bit) against its own
# checkpoints 8 and 16 and a 32-step LoRA tune; the first schedule is the reference
SCHEDULES_40 = (
    Schedule("default", (("steps", 32), ("save_at", (8, 16, 24, 32))), (8, 16, 32)),
    Schedule("lora32", (("steps", 32), ("save_at", (32,)), ("method", "lora")), (32,)),
)


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and grids of the editing benchmark. ``QUICK`` and ``FULL`` below are the presets."""

    n_scenes: int = 40  # base scenes (x one edit of each kind)
    suite_seed: int = SUITE_SEED  # seeds the scene stream and every edit
    kinds: tuple[str, ...] = KINDS
    seeds: tuple[int, ...] = (0, 1, 2, 3)  # sampling seeds: one sample each per config and edit
    steps: int = 25  # sampling steps (DDIM)
    tune_steps: int = 128  # ONE fine-tuning run per scene (UniTune: 128)
    save_at: tuple[int, ...] = (16, 32, 64, 128)  # its checkpoints (UniTune)
    tune_prompt: str = "caption"  # "caption": tune on "<rare> <source caption>"; "rare": token only
    sdedit_t0s: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    sdedit_cfgs: tuple[float, ...] = (7.5, 15.0)
    unitune_checkpoints: tuple[int, ...] = (16, 32, 64, 128)
    unitune_t0s: tuple[float, ...] = (0.7, 0.8, 0.9, 1.0)
    unitune_cfgs: tuple[float, ...] = (3.0, 7.5, 15.0, 32.0)
    unitune_extra: tuple[tuple[int, float, float], ...] = ()  # more (checkpoint, t0, CFG) points
    interp: bool = True  # also score every UniTune sample after pixel interpolation
    interp_window: int = EditConfig.interp_window  # as `unitune edit` interpolates
    interp_threshold: float = EditConfig.interp_threshold
    pg_points: tuple[tuple[int, float, float], ...] = tuple(
        product((64, 128), (0.9, 1.0), (3.0, 7.5, 15.0, 32.0))
    )  # prompt guidance (checkpoint, t0, CFG)
    sine_checkpoint: int = 128
    sine_t0: float = 1.0
    sine_cfg: float = 7.5
    sine_Ks: tuple[int, ...] = (0, 200, 400, 600, 800)  # 0..1000 scale; model guidance for t > K
    sine_vs: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)  # weight of the PRETRAINED model
    mask_margin: float = MASK_MARGIN  # world units (= pixels at 64 px) around an edited object
    background_mask: str = BACKGROUND_MASKS[0]  # background edits keep: "objects" (boxes) or "full"
    model: str = DEFAULT_MODEL
    recon_cfgs: tuple[float, ...] = (1.0, 7.5)  # "reconstruct": the tuned prompt itself, t0 = 1
    # ... and from the photo's inversion (the ceiling --start inversion moves), at these CFGs
    recon_inversion_cfgs: tuple[float, ...] = (1.0,)
    # what the edit keeps (inversion.py, automask.py): each of ``keep_methods`` samples the
    # (checkpoint, t0, CFG) points of ``keep_unitune`` (methods "unitune+...") or the (t0, CFG)
    # points of ``keep_sdedit`` (methods "sdedit+...", checkpoint 0 without the rare token).
    # Inversion starts are deterministic (every seed gives the same sample): one seed each
    keep_methods: tuple[str, ...] = KEEP_METHODS
    keep_unitune: tuple[tuple[int, float, float], ...] = tuple(
        product((32,), (0.8, 0.9, 1.0), (3.0, 7.5))
    )
    keep_sdedit: tuple[tuple[float, float], ...] = ((0.8, 7.5), (0.9, 7.5), (1.0, 7.5))
    # "unitune+route": the (checkpoint, t0, CFG) a global edit samples (the edit default); a
    # local one samples EditConfig's route_t0 / route_cfg at that checkpoint
    route_unitune: tuple[tuple[int, float, float], ...] = ((32, 0.9, 7.5),)
    # ... and the route's own settings (EditConfig's: the spread cut, a local edit's t0 and CFG),
    # named here so that a scene's results are not reused after they change
    route_settings: tuple[tuple[str, float], ...] = (
        ("route_spread", EditConfig.route_spread),
        ("route_t0", EditConfig.route_t0),
        ("route_cfg", EditConfig.route_cfg),
    )
    tune_extra: tuple[tuple[str, Any], ...] = ()  # TuneConfig overrides, e.g. (("method", "lora"),)
    save_samples: bool = True  # keep every sample as WORK/<scene>/samples/*.png (best-of-N, audits)
    # the time-to-quality study (bench/time_to_quality.py): when set, each scene is tuned once
    # per schedule and edited with the edit defaults only (the grids above are not sampled)
    schedules: tuple[Schedule, ...] = ()

    def keep_points(self, method: str) -> list[tuple[int, float, float]]:
        """(checkpoint, t0, CFG) of a keep method ("sdedit+...": checkpoint 0)."""
        if method.startswith("sdedit+"):
            return [(0, t0, w) for t0, w in self.keep_sdedit]
        if method == "unitune+route":
            return list(self.route_unitune)
        return list(self.keep_unitune)

    def checkpoints(self) -> set[int]:
        return set(self.save_at) | {self.tune_steps}

    def validate(self) -> None:
        used = {c for c, _, _ in self.unitune_points() + list(self.pg_points)}
        used |= {c for m in self.keep_methods for c, _, _ in self.keep_points(m) if c}
        if not set(self.keep_methods) <= set(KEEP_METHODS):
            raise ValueError(f"keep_methods must come from {KEEP_METHODS}")
        if self.sine_Ks:
            used.add(self.sine_checkpoint)
        bad = sorted(c for c in used if c not in self.checkpoints())
        if bad:
            raise ValueError(
                f"checkpoints {bad} are not saved by the tune ({sorted(self.save_at)})"
            )
        if self.tune_prompt not in ("caption", "rare"):
            raise ValueError(f"tune_prompt must be 'caption' or 'rare', not {self.tune_prompt!r}")
        if self.background_mask not in BACKGROUND_MASKS:
            raise ValueError(
                f"background_mask must be 'objects' or 'full', not {self.background_mask!r}"
            )
        for sch in self.schedules:
            sch_tune = replace(TuneConfig(), **dict(sch.tune))
            sch_tune.validate()
            # as tune() saves: save_at up to --steps, and the last step (the embedded model's
            # method: full, unless the schedule names one)
            sched = sch_tune.schedule(sch_tune.method or "full")
            saved = {c for c in sched.save_at if c <= sched.steps} | {0, sched.steps}
            _check(set(sch.checkpoints) <= saved, f"schedule {sch.name}: checkpoints not saved")
        if not set(self.kinds) <= set(KINDS) or not self.seeds or self.n_scenes < 1:
            raise ValueError("kinds must come from world.edits.KINDS; seeds and scenes non-empty")

    def unitune_points(self) -> list[tuple[int, float, float]]:
        grid = product(self.unitune_checkpoints, self.unitune_t0s, self.unitune_cfgs)
        return list(dict.fromkeys([*grid, *self.unitune_extra]))

    def fingerprint(self) -> str:
        """What a scene's results depend on (everything but the number of scenes)."""
        d = {k: v for k, v in asdict(self).items() if k != "n_scenes"}
        if not d["schedules"]:  # absent when empty, as tune_extra below
            del d["schedules"]
        if not d["tune_extra"]:  # absent when empty: fingerprints of runs made before it existed
            del d["tune_extra"]
        if "unitune+route" not in d["keep_methods"]:  # runs made before the route existed
            del d["route_unitune"], d["route_settings"]
        if not d["keep_methods"]:  # likewise the keep methods and inversion's reconstruction
            for k in ("keep_methods", "keep_unitune", "keep_sdedit", "recon_inversion_cfgs"):
                del d[k]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# Full size: >= 40 scenes, the grids (checkpoints {16,32,64,128} x t0 x CFG {3,7.5,15,32}),
# 2 seeds: 400 samples per config; the issue fixes scenes, kinds and grids, not seeds, and 4 seeds
# (best-of-N) would double a run that already takes 17.8 core-hours on a CPU (docs/BENCHMARKS.md)
# CFG 1 at t0 {0.8, 1} is UniTune's claim 2 (without CFG the edit is ignored), one UNet pass each
FULL = BenchConfig(
    seeds=(0, 1),
    unitune_extra=tuple(product((16, 32, 64, 128), (0.8, 1.0), (1.0,))),
)
# --quick: 4 scenes, one 64-step tune each, 15 sampling steps, 2 seeds, 2+7+1+4 configs (the
# interpolated UniTune samples are free): sized for < 10 min on 2 CPU cores (docs/BENCHMARKS.md).
QUICK = BenchConfig(
    n_scenes=4,
    seeds=(0, 1),
    steps=15,
    tune_steps=64,
    save_at=(16, 32, 64),
    sdedit_t0s=(0.6, 0.8),
    sdedit_cfgs=(7.5,),
    unitune_checkpoints=(16, 64),
    unitune_t0s=(0.8, 1.0),
    unitune_cfgs=(7.5,),
    unitune_extra=((64, 1.0, 3.0), (64, 1.0, 15.0), (64, 1.0, 32.0)),
    pg_points=((64, 1.0, 7.5),),
    sine_checkpoint=64,
    sine_Ks=(200, 600),
    sine_vs=(0.5, 0.9),
    keep_unitune=((64, 0.8, 7.5),),
    keep_sdedit=((0.8, 7.5),),
)


# What 2 CPU cores run in ~40 minutes (docs/BENCHMARKS.md has its time): FULL's checkpoints,
# CFG 1 (claim 2) and the paper's 32, t0 {0.8, 1}, SINE around the paper's (K 400, v 0.7);
# 4 seeds for best-of-N.
MEDIUM = replace(
    FULL,
    n_scenes=8,
    seeds=(0, 1, 2, 3),
    unitune_extra=((32, 0.9, 7.5), (32, 0.9, 3.0)),  # the default, and --fidelity's CFG 3
    # the keep methods at the default's checkpoint and the last (the most exact inversion)
    keep_unitune=tuple(product((32, 128), (0.8, 0.9, 1.0), (3.0, 7.5))),
    steps=15,
    sdedit_t0s=(0.6, 0.8, 0.9, 1.0),
    sdedit_cfgs=(7.5,),
    unitune_t0s=(0.8, 1.0),
    unitune_cfgs=(1.0, 7.5, 32.0),
    pg_points=((64, 1.0, 7.5), (128, 1.0, 7.5)),
    sine_Ks=(200, 400, 600),
    sine_vs=(0.3, 0.7),
)
# LoRA vs full fine-tuning (--tune-method): a subset of MEDIUM's UniTune configs and seeds, so a
# full-method run of it is MEDIUM's own samples (same scenes, seeds, noise)
TUNE_COMPARE = replace(
    MEDIUM,
    n_scenes=4,
    seeds=(0, 1),
    sdedit_t0s=(),
    unitune_checkpoints=(32, 64, 128),
    unitune_cfgs=(7.5, 32.0),
    sine_Ks=(),
    recon_cfgs=(7.5,),
    keep_methods=(),
    recon_inversion_cfgs=(),
)
# time to quality (#35): MEDIUM's 8 scenes x 5 kinds and 15 sampling steps, 2 seeds, each scene
# tuned once per schedule (8 tunes) and edited with the defaults at each schedule's checkpoints
TIME_TO_QUALITY = replace(MEDIUM, seeds=(0, 1), schedules=SCHEDULES)
# ... and its check on FULL's 40 scenes, 25 sampling steps, 2 seeds (the full benchmark's edits)
TIME_TO_QUALITY_40 = replace(FULL, schedules=SCHEDULES_40)
# the automatic mask's two cuts (automask.py: DiffEdit's, Otsu's) on MEDIUM's 8 scenes, seeds and
# sampling steps, against the edit default and SDEdit's t0 0.8-1 points: MEDIUM's keep points at
# the default's checkpoint 32 (a 32-step tune: the same weights as MEDIUM's 128-step run's
# checkpoint 32, whose draws do not depend on --steps), so its shared configs repeat MEDIUM's
AUTOMASK_RULES = replace(
    MEDIUM,
    tune_steps=32,
    save_at=(32,),
    sdedit_t0s=(0.8, 0.9, 1.0),
    unitune_checkpoints=(32,),
    unitune_t0s=(0.9,),
    unitune_cfgs=(7.5,),
    unitune_extra=((32, 0.9, 3.0),),
    pg_points=(),
    sine_Ks=(),
    recon_cfgs=(),
    recon_inversion_cfgs=(),
    keep_methods=tuple(
        f"{base}{cut}"
        for base in ("sdedit+automask", "unitune+automask", "unitune+inversion-neg+automask")
        for cut in ("", "-otsu")
    )
    + ("unitune+inversion-neg",),
    keep_unitune=tuple(product((32,), (0.8, 0.9, 1.0), (3.0, 7.5))),
)
# The check of the global / local route (scripts/automask_route.py) on scenes it was not read
# off: the automask-rules run's 8 scenes and the next 8 of the same stream, with only the
# configs the route picks from (the tunes of the first 8 are the automask-rules run's)
ROUTE_CHECK = replace(
    AUTOMASK_RULES,
    n_scenes=16,
    sdedit_t0s=(0.9, 1.0),
    unitune_extra=(),
    keep_methods=("unitune+inversion-neg+automask", "unitune+inversion-neg"),
    keep_unitune=((32, 0.8, 3.0),),
)
# ... and at the full preset's sampling (25 steps, its 2 seeds) on its 40 scenes: what the final
# defaults are read at, for the route's five configs only (the tunes are the route check's)
ROUTE_CHECK_FULL = replace(ROUTE_CHECK, n_scenes=FULL.n_scenes, steps=FULL.steps, seeds=FULL.seeds)
# Candidates for the route's local branch (scripts/route_local.py), on the route check's 40 scenes
# and tunes: negative-prompt inversion and the noise start (seeds give different images), each
# inside the automatic mask, at t0 {0.8, 0.9, 1} x CFG {3, 7.5}; 2 seeds (the noise start's; an
# inversion samples one), and the default for the pairing (the route check's other configs are
# not sampled again: its records are merged in by scene, edit and seed)
ROUTE_LOCAL = replace(
    ROUTE_CHECK,
    n_scenes=FULL.n_scenes,
    seeds=(0, 1),
    sdedit_t0s=(),
    keep_methods=("unitune+inversion-neg+automask", "unitune+automask"),
    keep_unitune=tuple(product((32,), (0.8, 0.9, 1.0), (3.0, 7.5))),
)
PRESETS = {
    "quick": QUICK,
    "medium": MEDIUM,
    "full": FULL,
    "tune-compare": TUNE_COMPARE,
    "time-to-quality": TIME_TO_QUALITY,
    "time-to-quality-40": TIME_TO_QUALITY_40,
    "automask-rules": AUTOMASK_RULES,
    "route-check": ROUTE_CHECK,
    "route-check-full": ROUTE_CHECK_FULL,
    "route-local": ROUTE_LOCAL,
}
