"""`unitune bench speed`: unitune against diffusers on the same model, weights and settings.

Each measurement runs in a child process of its own (so its peak memory is its own: CUDA max
allocated, else the process's peak RSS), warms up, then repeats and reports every time:

- ``edit`` / ``edit-t0``: seconds per image of ``Editor.edit`` (checkpoint 0, ``steps`` DDIM
  steps, CFG 7.5, ``batch`` seeds in one call; from noise, and from t0 0.9) against the family's
  own diffusers pipeline (text-to-image, img2img at strength 0.9) with the same scheduler,
  prompt, guidance and seeds;
- ``tune``: seconds per step of unitune's ``tune`` (read between consecutive steps, so the one
  checkpoint save is outside) against a reference step written as diffusers' DreamBooth
  scripts write theirs (latents and prompt embedding computed once, noise, timesteps,
  ``add_noise``, the network, MSE, backward, the same Adafactor, zero_grad), same batch.

The parent writes the medians, spreads and ratios (unitune / diffusers) as JSON.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import DEFAULT_MODEL

CASES = ("edit", "edit-t0", "tune")
IMPLS = ("unitune", "diffusers")


@dataclass(frozen=True)
class SpeedConfig:
    """What `unitune bench speed` measures."""

    model: str = DEFAULT_MODEL  # --model reference (the embedded model by default)
    device: str = "cpu"  # cpu or cuda
    steps: int = 50  # DDIM steps of an edit
    batch: int = 2  # seeds per edit call; images per second = batch / seconds
    tune_steps: int = 6  # timed tuning steps (after 2 untimed)
    tune_batch: int = 4  # copies of the latent per tuning step (UniTune: 4)
    method: str = "full"  # full or lora tuning
    repeats: int = 3  # timed repeats of an edit (after one untimed)


def _peak_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _edit(impl: str, t0: float, sc: SpeedConfig, tune_dir: str) -> list[float]:
    import torch

    seeds = tuple(range(sc.batch))
    if impl == "unitune":
        from ..config import EditConfig
        from ..edit import Editor

        ed = Editor(tune_dir, sc.device)
        cfg = EditConfig(checkpoint=0, t0=t0, steps=sc.steps, seeds=seeds, interpolate=False)

        def run():
            ed.edit("a photo", cfg, progress=False)

    else:  # the family's own pipeline, loaded from the same model; no unitune model in memory
        import diffusers

        from ..backbones import family_of, probe
        from ..backbones.base import resolve_device
        from ..checks import tune_model_ref
        from ..tunefolder import TuneFolder

        folder = TuneFolder.open(tune_dir)
        names = family_of(folder.manifest.get("family")).pipelines  # (text-to-image, img2img)
        cls = getattr(diffusers, names[0] if t0 >= 1 else names[1])
        pipe = cls.from_pretrained(probe(tune_model_ref(folder)).ref, **_pipe_kwargs(cls))
        pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        dev = resolve_device(sc.device)
        pipe.to(dev)
        hw = tuple(folder.manifest["resolution"])
        kw = dict(prompt=["beikkpic a photo"] * sc.batch, guidance_scale=7.5,
                  num_inference_steps=sc.steps, output_type="np")  # fmt: skip
        if t0 < 1:
            kw |= {"image": folder.base_latents().repeat(sc.batch, 1, 1, 1).to(dev), "strength": t0}  # fmt: skip
        else:
            kw |= {"height": hw[0], "width": hw[1]}

        def run():
            pipe(generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], **kw)

    run()  # warm-up
    times = []
    for _ in range(sc.repeats):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) / sc.batch)
    return times


def _pipe_kwargs(cls) -> dict:
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in params else {}  # fmt: skip


def _tune(impl: str, sc: SpeedConfig, photo: str, work: str) -> list[float]:
    import torch
    import torch.nn.functional as F

    from ..backbones import load_model
    from ..config import TuneConfig

    n = 2 + sc.tune_steps
    cfg = TuneConfig(steps=n, save_at=(n,), batch_size=sc.tune_batch, method=sc.method)
    bb = load_model(sc.model, sc.device)
    if impl == "unitune":
        from ..tune import tune

        stamps: list[float] = []
        tune(photo, Path(work) / "t", cfg, model=sc.model, backbone=bb, progress=False,
             overwrite=True, on_step=lambda s, loss: stamps.append(time.perf_counter()))  # fmt: skip
        return [b - a for a, b in zip(stamps[1:-1], stamps[2:])]
    from transformers.optimization import Adafactor

    from ..images import fit_image, load_image, pil_to_tensor
    from ..state import state_of

    res = bb.resolution
    x0 = bb.encode_image(pil_to_tensor(fit_image(load_image(photo), (res, res))[0]))
    cond = bb.encode(["beikkpic"]).expand(sc.tune_batch)
    gen = torch.Generator().manual_seed(0)
    times = []
    with state_of(bb).training(cfg) as params:
        opt = Adafactor(params, lr=cfg.learning_rate(), scale_parameter=False,
                        relative_step=False, warmup_init=False)  # fmt: skip
        bb.module.train()
        for i in range(n):
            t = time.perf_counter()
            x = x0.expand(sc.tune_batch, -1, -1, -1)
            noise = torch.randn(x.shape, generator=gen).to(x)
            ts = torch.randint(0, bb.num_train_timesteps, (sc.tune_batch,), generator=gen).to(x.device)  # fmt: skip
            pred = bb.denoise(bb.module, bb.add_noise(x, noise, ts), ts, cond)
            F.mse_loss(pred.float(), bb.target(x, noise, ts).float()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 2:
                times.append(time.perf_counter() - t)
    return times


def child(argv: list[str]) -> None:
    """``python -m unitune.bench.speed CASE IMPL CONFIG_JSON TUNE_DIR PHOTO WORK``: one
    measurement, printed as one JSON line."""
    from .. import logs
    from ..backbones.base import resolve_device

    logs.configure(
        verbose=False
    )  # stdout carries the result; the libraries' bars would only clutter
    logs.quiet_libraries()
    case, impl, cfg_json, tune_dir, photo, work = argv
    sc = SpeedConfig(**json.loads(cfg_json))
    if case == "tune":
        times = _tune(impl, sc, photo, work)
    else:
        times = _edit(impl, 1.0 if case == "edit" else 0.9, sc, tune_dir)
    print(json.dumps({"times": times, "peak_mb": round(_peak_mb(resolve_device(sc.device)), 1)}))


def run_speed(sc: SpeedConfig, out: str | Path, log=print) -> dict:
    """Every case x implementation in its own process; the summary (also written to ``out``)."""
    from ..config import TuneConfig
    from ..demo import SCENE
    from ..fileio import atomic_write_json
    from ..tune import tune
    from ..world.render import render, to_pil

    out = Path(out)
    work = out.parent / f".{out.stem}-work"
    work.mkdir(parents=True, exist_ok=True)
    photo = work / "photo.png"
    to_pil(render([SCENE], 256)[0]).save(photo)
    tune_dir = work / "untuned"
    tune(photo, tune_dir, TuneConfig(steps=0), model=sc.model, device=sc.device, progress=False,
         overwrite=True)  # fmt: skip
    results: dict[str, dict] = {}
    for case in CASES:
        for impl in IMPLS:
            cmd = [sys.executable, "-m", "unitune.bench.speed", case, impl,
                   json.dumps(asdict(sc)), str(tune_dir), str(photo), str(work)]  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"{case}/{impl} failed:\n{r.stderr[-2000:]}")
            m = json.loads(r.stdout.strip().splitlines()[-1])
            t = m["times"]
            results.setdefault(case, {})[impl] = {
                "median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4),
                "max_s": round(max(t), 4), "n": len(t), "peak_mb": m["peak_mb"]}  # fmt: skip
            log(f"{case:8} {impl:9} median {statistics.median(t):.4f} s  (min {min(t):.4f}, max {max(t):.4f}, n {len(t)})  peak {m['peak_mb']:.0f} MB")  # fmt: skip
        u, d = results[case]["unitune"], results[case]["diffusers"]
        results[case]["ratio"] = round(u["median_s"] / d["median_s"], 3)
        log(f"{case:8} ratio unitune / diffusers: {results[case]['ratio']:.3f}")
    summary = {"config": asdict(sc), "unit": {"edit": "s per image", "tune": "s per step"}, "results": results}  # fmt: skip
    atomic_write_json(out, summary)
    return summary


if __name__ == "__main__":
    child(sys.argv[1:])
