"""The measurements of `unitune bench speed`, each run in a child process of its own
(``python -m unitune.bench.speed_runs MODE CASE IMPL CONFIG_JSON WORK``, one JSON line out).

MODE ``time``: unitune and diffusers in ONE process on the same machine state, interleaved:
both warm up, then each repeat runs one after the other, their order alternating (ABBA...), so
a slow spell of a shared machine hits both alike and the ratio survives it.
MODE ``memory``: one implementation alone after its warm-up, for its own peak memory (CUDA max
allocated, else the process's peak RSS).

- ``edit`` / ``edit-t0``: seconds per image of ``Editor.edit`` (checkpoint 0, the model's
  sampler (DDIM for SD; the flow families' own Euler), CFG 7.5, ``batch`` seeds in one call;
  from noise, and from t0 0.9) against the family's own diffusers pipeline (text-to-image;
  img2img at strength 0.9) with the same scheduler, prompt, guidance and seeds. A family with
  no img2img pipeline (FLUX.2) has no ``edit-t0`` case.
- ``tune``: seconds per step of unitune's ``tune`` (read between consecutive steps, so saving is
  outside) against a step written as diffusers' DreamBooth scripts write theirs (latent and
  prompt embedding computed once; noise, timesteps, ``add_noise``, the network, MSE, backward,
  optimizer step, zero_grad) with transformers' Adafactor at the same settings, batch,
  precision and gradient checkpointing. The first step of every round (optimizer state
  allocation) is not timed.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from .speed import SpeedConfig

PROMPT = "a photo"
CFG = 7.5  # both implementations' guidance (--cfg; the pipeline's own argument for it)


def _peak_mb(device) -> float:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _accel(sc: SpeedConfig):
    from ..config import Acceleration

    return Acceleration(compile=sc.compile, channels_last=sc.channels_last, tf32=sc.tf32)


def edit_runner(impl: str, t0: float, sc: SpeedConfig, tune_dir: str) -> Callable[[], None]:
    """A callable making one batch of ``sc.batch`` edits."""
    import torch

    seeds = tuple(range(sc.batch))
    if impl == "unitune":
        from ..config import EditConfig
        from ..edit import Editor

        ed = Editor(tune_dir, sc.device, accel=_accel(sc))
        cfg = EditConfig(
            checkpoint=0, t0=t0, cfg=CFG, steps=sc.steps, seeds=seeds, interpolate=False
        )
        return lambda: ed.edit(PROMPT, cfg, progress=False)
    import diffusers

    from ..backbones import family_of, probe
    from ..backbones.base import resolve_device
    from ..checks import tune_model_ref
    from ..tunefolder import TuneFolder

    folder = TuneFolder.open(tune_dir)
    fam = family_of(folder.manifest.family)
    names = fam.pipelines  # (text-to-image, img2img)
    cls = getattr(diffusers, names[0] if t0 >= 1 else names[1])
    pipe = cls.from_pretrained(probe(tune_model_ref(folder)).ref, **_pipe_kwargs(cls))
    if fam.defaults.sampler == "ddim":  # unitune's sampler there; the others keep their own
        pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    dev = resolve_device(sc.device)
    pipe.to(dev)
    net = getattr(pipe, "unet", None) or pipe.transformer
    if sc.channels_last:
        net.to(memory_format=torch.channels_last)
    if sc.compile:
        net.compile()
    hw = folder.manifest.resolution
    kw = dict(
        prompt=[f"beikkpic {PROMPT}"] * sc.batch,
        num_inference_steps=sc.steps,
        output_type="np",
    )
    kw[fam.cfg_argument] = CFG  # the pipeline's name for --cfg
    if fam.cfg_argument == "true_cfg_scale":  # its CFG needs a negative prompt: unitune's ""
        kw["negative_prompt"] = [""] * sc.batch
    if t0 < 1:  # img2img from the tune's cached base latents, as unitune's edit starts from them
        kw |= {"image": folder.base_latents().repeat(sc.batch, 1, 1, 1).to(dev), "strength": t0}
    if t0 >= 1 or "height" in inspect.signature(pipe.__call__).parameters:
        kw |= {"height": hw[0], "width": hw[1]}  # the flow img2img pipelines take the size too
    return lambda: pipe(generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], **kw)


def _pipe_kwargs(cls) -> dict:

    params = inspect.signature(cls.__init__).parameters
    return (
        {"safety_checker": None, "requires_safety_checker": False}
        if "safety_checker" in params
        else {}
    )


def tune_runner(impl: str, sc: SpeedConfig, bb, photo: str, work: str) -> Callable[[], list[float]]:
    """A callable making one round of ``1 + sc.tune_steps`` steps on the loaded backbone ``bb``
    and returning the seconds of every step but the first."""
    import torch
    import torch.nn.functional as F

    from ..config import TuneConfig

    n = 1 + sc.tune_steps
    cfg = TuneConfig(
        steps=n,
        save_at=(n,),
        batch_size=sc.tune_batch,
        method=sc.method,
        resolution=sc.resolution,
        gradient_checkpointing=sc.gradient_checkpointing,
    ).for_model(bb.defaults)  # the model's LoRA rank and learning rate, as `unitune tune` runs
    dev = bb.device
    if impl == "unitune":
        from ..tune import tune

        def run() -> list[float]:
            stamps: list[float] = []

            def stamp(step: int, loss: float) -> None:
                _sync(dev)
                stamps.append(time.perf_counter())

            tune(
                photo,
                Path(work) / "t",
                cfg,
                model=sc.model,
                backbone=bb,
                progress=False,
                overwrite=True,
                on_step=stamp,
            )
            return [b - a for a, b in zip(stamps, stamps[1:])]

        return run
    from transformers.optimization import Adafactor

    from ..images import fit_image, load_image, pil_to_tensor
    from ..state import state_of

    res = sc.resolution or bb.resolution
    x0 = bb.encode_image(pil_to_tensor(fit_image(load_image(photo), (res, res))[0]).to(dev))
    cond = bb.encode(["beikkpic"]).expand(sc.tune_batch)
    gen = torch.Generator().manual_seed(0)
    cuda = dev.type == "cuda"

    def run() -> list[float]:
        times = []
        with state_of(bb).training(cfg) as params:
            opt = Adafactor(
                params,
                lr=cfg.learning_rate(),
                scale_parameter=False,
                relative_step=False,
                warmup_init=False,
            )
            ckpt = cfg.uses_gradient_checkpointing(cuda)
            if ckpt:
                bb.module.enable_gradient_checkpointing()
            amp = (
                torch.autocast(dev.type, dtype=torch.bfloat16)
                if cfg.uses_bf16(cuda)
                else nullcontext()
            )
            bb.module.train()
            for i in range(n):
                t = time.perf_counter()
                x = x0.expand(sc.tune_batch, -1, -1, -1)
                noise = torch.randn(x.shape, generator=gen).to(x)
                ts = torch.randint(0, bb.num_train_timesteps, (sc.tune_batch,), generator=gen).to(
                    dev
                )
                with amp:
                    pred = bb.denoise(bb.module, bb.add_noise(x, noise, ts), ts, cond)
                F.mse_loss(pred.float(), bb.target(x, noise, ts).float()).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                _sync(dev)
                if i:
                    times.append(time.perf_counter() - t)
            if ckpt:
                bb.module.disable_gradient_checkpointing()
        return times

    return run


def measure(mode: str, case: str, impl: str, sc: SpeedConfig, work: str) -> dict:
    """One child's measurement: {impl: [seconds...]} (mode time) or {"peak_mb": MB} (memory)."""
    from ..backbones import load_model
    from ..backbones.base import resolve_device

    if sc.threads:
        import torch

        torch.set_num_threads(sc.threads)
    dev = resolve_device(sc.device)
    impls = ("unitune", "diffusers") if mode == "time" else (impl,)
    tune_dir, photo = str(Path(work) / "untuned"), str(Path(work) / "photo.png")
    if case == "tune":
        bb = load_model(sc.model, sc.device, accel=_accel(sc))
        runs = {i: tune_runner(i, sc, bb, photo, work) for i in impls}
        per = sc.tune_steps  # a round gives this many step times
    else:
        t0 = 1.0 if case == "edit" else 0.9
        edit_runs = {i: edit_runner(i, t0, sc, tune_dir) for i in impls}
        per = sc.batch

        def timed(f):
            def run() -> list[float]:
                t = time.perf_counter()
                f()
                _sync(dev)
                return [(time.perf_counter() - t) / per]

            return run

        runs = {i: timed(f) for i, f in edit_runs.items()}
    for f in runs.values():  # warm-up (and, with --compile, the compile)
        f()
    if mode == "memory":
        return {"peak_mb": round(_peak_mb(dev), 1)}
    times: dict[str, list[float]] = {i: [] for i in impls}
    for r in range(sc.repeats):
        for i in impls if r % 2 == 0 else impls[::-1]:
            times[i] += runs[i]()
    return {"times": times}


def main(argv: list[str]) -> None:
    from .. import logs

    logs.configure(verbose=False)  # stdout carries the result; the libraries' bars would clutter
    logs.quiet_libraries()
    mode, case, impl, cfg_json, work = argv
    sc = SpeedConfig(**{**json.loads(cfg_json), "cases": ()})
    if mode == "prepare":
        from .speed import prepare

        print(json.dumps({"model": prepare(sc, Path(work)).model}))
        return
    print(json.dumps(measure(mode, case, impl, sc, work)))


if __name__ == "__main__":
    main(sys.argv[1:])
