"""UniTune fine-tuning (§3.2): pairs (base image, rare-token prompt), one run, several checkpoints.

The base image is encoded once and the prompt text-encoded once (then the text encoders are
freed when this run loaded the model); each step is a batch of the same x0 with independent
noise and timesteps, and the backbone gives the noising, the target (epsilon, v, ...) and the
timestep density. Weights are checkpointed at ``save_at`` steps; an exact training state (fp32
weights, Adafactor state, RNG) rides along so an interrupted run resumes bit-for-bit from its
last checkpoint. The model passed in is left exactly as it was (``ModelState.training``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from . import adapters, patches
from .adafactor import Adafactor
from .backbones import load, probe
from .backbones.base import Backbone, warn_long_prompts
from .checks import check_tune, refuse_quantized_full
from .config import DEFAULT_MODEL, Acceleration, TuneConfig
from .errors import UnituneWarning, UserError
from .fileio import clean_leftovers, recover, remove_file
from .images import fit_image, pil_to_tensor
from .manifest import ImageRecord, Manifest
from .state import state_of
from .tune_schedule import Probe, Stopper, lr_at, squeeze
from .tunefolder import (
    MANIFEST,
    RESUME,
    SR_DIR,
    TuneFolder,
    load_resume_state,
    save_resume_state,
    versions,
)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (tensors, JSON scalars) so it can live in safetensors (no pickle)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{idx}.{k}"] = v
            else:
                scalars["state"].setdefault(str(idx), {})[k] = v
    return tensors, scalars


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict, scalars: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for idx, st in scalars["state"].items():
        state.setdefault(int(idx), {}).update(st)
    groups = scalars["param_groups"]
    for g in groups:  # JSON turned tuples into lists; Adafactor indexes eps[0], eps[1] only
        if isinstance(g.get("eps"), list):
            g["eps"] = tuple(g["eps"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def tune(
    image: str | Path,
    out: str | Path,
    cfg: TuneConfig = TuneConfig(),
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    backbone: Backbone | None = None,
    model_config: str | None = None,
    on_step: Callable[[int, float], None] | None = None,
    vae: str | None = None,
    accel: Acceleration | None = None,
    keep_resume: bool = False,
    preset: str | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> TuneFolder:
    """Fine-tune ``model`` on one image into the tune folder ``out``; resumes if it exists.
    ``backbone``: an already loaded model to tune (left as it was found); else ``model`` is
    loaded here and its text encoders are freed once the prompt is encoded. ``vae``: another
    VAE for the model (folder or .safetensors), recorded so edits use it too. ``accel``:
    torch.compile / channels_last for a model loaded here. ``keep_resume``: keep the exact
    training state (fp32 weights + optimizer: 3x a full checkpoint) after the run completes.
    ``preset``: the config.TUNE_PRESETS entry ``cfg`` was built from (`--preset`), whose needs
    are checked with the rest (SINE's: a class noun); None names none. Every check runs before
    a model loads (checks.check_tune), so a bad argument costs the CLI's one-line UserError.
    ``on_checkpoint(step)``: called as soon as each checkpoint is on disk (preview.Previewer's
    ``submit`` renders an edit from it while the tune goes on)."""
    out = Path(out)
    recover(out)  # a killed run's temps beside the folder (and a half-done --overwrite)
    plan = check_tune(image, out, cfg, model, model_config, overwrite, vae, preset=preset)
    if plan.resume is not None:
        clean_leftovers(out, recursive=True)  # a killed run's temp files inside it
    img, sha, folder, cfg = plan.image, plan.sha256, plan.resume, plan.cfg
    refuse_quantized_full(accel, cfg.method)
    owned = backbone is None
    bb = backbone or load(plan.spec, device, vae=vae, accel=accel)
    digest = bb.digest  # of the weights as loaded (backbones.base.weights_digest)
    # absent in manifests written before it existed
    if folder is not None and (folder.manifest.model_digest or digest) != digest:
        raise UserError(
            f"{out} holds a tune of a different model weights",
            "pass --overwrite to start fresh, or another --out",
        )
    # --overwrite: the new folder replaces the old in one rename (TuneFolder.create), once
    # the model has loaded
    res = cfg.resolution or bb.resolution
    if res % bb.size_multiple:
        raise UserError(f"--resolution {res} is not a multiple of {bb.size_multiple}", "round it")
    fitted, placement = fit_image(img, (res, res), cfg.resize)
    if folder is None:

        def base_files(tmp: Path) -> None:  # in the new folder before it moves in
            img.save(tmp / "original.png", format="PNG")
            fitted.save(tmp / "base.png", format="PNG")
            x0 = bb.encode_image(pil_to_tensor(fitted)).detach().contiguous().cpu()
            save_file({"latents": x0}, str(tmp / "base_latents.safetensors"))

        folder = TuneFolder.create(
            out,
            Manifest(
                model=model,
                settings=cfg,
                image=ImageRecord(sha, str(image), tuple(img.size)),
                resolution=(res, res),
                placement=placement,
                model_path=bb.model_ref,
                family=bb.family,
                vae=str(Path(vae).resolve()) if vae else None,
                quantize=accel.quantize if accel else None,
                model_digest=digest,
                size_multiple=bb.size_multiple,
                prompt=cfg.prompt(),
                versions=versions(),
                status="running",
            ),
            base_files,
        )
    placement = folder.manifest.placement
    warn_long_prompts(bb, [cfg.prompt()])
    cond = bb.encode([cfg.prompt()], placement.geometry())  # one row; text encoders frozen
    if owned:
        bb.free_text_encoders()
    _train(folder, bb, cfg, img, progress, on_step, cond, on_checkpoint)
    if cfg.sr_model:  # a cascade: its super-resolution stage, on the same prompt's embedding
        _tune_sr(folder, cfg, img, cond, bb, progress, on_step, accel, keep_resume)
    _drop_resume(folder, keep_resume)
    return folder


def _drop_resume(folder: TuneFolder, keep: bool) -> None:
    if not keep:  # exact state is only needed while a run can still be resumed
        remove_file(folder.path / RESUME)


def _tune_sr(
    folder: TuneFolder,
    cfg: TuneConfig,
    img,
    cond,
    base: Backbone,
    progress,
    on_step,
    accel,
    keep_resume: bool,
) -> None:
    """The cascade's super-resolution stage, tuned into ``folder/sr`` on (the base stage's image
    -> the image at the SR model's size, or as many times the base stage's --resolution as its
    native sizes differ), with noise augmentation of its input as the SR model was trained
    (Backbone.training_cond), on the base stage's device."""
    path = folder.path / SR_DIR
    sr = TuneFolder.open(path) if (path / MANIFEST).is_file() else None
    if sr is not None:
        clean_leftovers(path, recursive=True)
    bb = load(probe(cfg.sr_model), base.device, accel=accel)
    if sr is not None and sr.manifest.model_digest != bb.digest:
        raise UserError(
            f"{path} holds a tune of different SR weights", "pass --overwrite to start fresh"
        )
    res = folder.manifest.resolution[0] * bb.resolution // base.resolution
    if sr is None:
        hi, _ = fit_image(img, (res, res), cfg.resize)
        m = folder.manifest

        def base_files(tmp: Path) -> None:
            hi.save(tmp / "base.png", format="PNG")
            lat = bb.encode_image(pil_to_tensor(hi)).detach().contiguous().cpu()
            save_file({"latents": lat}, str(tmp / "base_latents.safetensors"))

        sr = TuneFolder.create(
            path,
            Manifest(  # the base stage's image, placement, prompt, settings and versions
                model=cfg.sr_model,
                settings=m.settings,
                image=m.image,
                resolution=(res, res),
                placement=m.placement,
                model_path=bb.model_ref,
                family=bb.family,
                model_digest=bb.digest,
                size_multiple=bb.size_multiple,
                prompt=m.prompt,
                versions=m.versions,
                status="running",
            ),
            base_files,
        )
    low = folder.base_latents()  # the base stage's image (pixels: IF's model space)
    _train(sr, bb, cfg, img, progress, on_step, bb.with_low(cond, low))
    _drop_resume(sr, keep_resume)


def _train(
    folder: TuneFolder,
    bb: Backbone,
    cfg: TuneConfig,
    original,
    progress: bool,
    on_step: Callable[[int, float], None] | None,
    cond,
    on_checkpoint: Callable[[int], None] | None = None,
) -> None:
    """Tune ``bb`` into ``folder`` on the one-row conditioning ``cond`` (resumes; a no-op once
    the folder is complete); ``on_checkpoint(step)`` after each checkpoint is on disk."""
    dev = bb.device
    cuda = dev.type == "cuda"
    # a rerun trusts only what verifies: every recorded checkpoint's size and sha256
    damaged = folder.damaged(digest=True)
    if folder.manifest.status == "complete":
        if not damaged:
            return
        folder.update(status="running")
    if damaged:
        warnings.warn(
            f"{folder.path}: checkpoints {', '.join(map(str, damaged))} are missing or damaged; "
            "re-training them",
            UnituneWarning,
            stacklevel=2,
        )
    x0_base = folder.base_latents().to(dev, bb.dtype)  # (1, C, h, w)
    state = state_of(bb)
    with state.training(cfg) as trainable:
        module = bb.module
        opt = Adafactor(trainable, lr=cfg.learning_rate())  # transformers' update, batched
        gen = torch.Generator().manual_seed(cfg.seed)  # CPU: same noise on any device
        start = 0
        history: list[float] = []
        probes: list[float] = []  # auto_stop's probe losses so far
        # full tunes store deltas against the PRETRAINED weights (taken before a resume loads)
        base_state = state.snapshot() if cfg.method == "full" else None
        resume = load_resume_state(folder)
        if resume is not None and damaged and damaged[0] <= resume[0]:
            resume = None  # a damaged checkpoint before the resume point: only step 0 re-makes it
        if resume is not None:
            start, tensors, scalars, hist = resume
            adapters.load_trainable_state(module, tensors)
            _restore_optimizer(opt, tensors, scalars)
            gen.set_state(tensors["rng"])
            # the resume file's own history (older files: the manifest's, cut at its step)
            old = folder.manifest.loss_history[:start]
            history = list(hist if hist is not None else old)
            probes = list(scalars.get("probe", []))
        # checkpoints past --steps are dropped; the last step is always saved
        save_at = sorted({s for s in cfg.save_at if s <= cfg.steps} | ({cfg.steps} - {0}))
        if start < cfg.steps:
            grad_ckpt = cfg.uses_gradient_checkpointing(cuda)
            if grad_ckpt and hasattr(module, "enable_gradient_checkpointing"):
                module.enable_gradient_checkpointing()
            bf16 = cfg.uses_bf16(cuda)
            amp = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
            try:
                module.train()
                run = _Run(
                    folder,
                    bb,
                    cfg,
                    original,
                    x0_base,
                    cond,
                    trainable,
                    opt,
                    gen,
                    save_at,
                    base_state,
                    amp,
                    probes,
                )
                _steps(run, start, history, progress, on_step, on_checkpoint)
            finally:
                if grad_ckpt and hasattr(module, "disable_gradient_checkpointing"):
                    module.disable_gradient_checkpointing()
    folder.update(status="complete", loss_history=tuple(history))


@dataclass(frozen=True, eq=False)
class _Run:
    """What one training run's loop works with (``_train`` builds it)."""

    folder: TuneFolder  # where checkpoints and the resume state go
    bb: Backbone  # the model being tuned (its module holds the trainable weights)
    cfg: TuneConfig  # the settings, the model's defaults filled in
    original: Any  # the full-resolution photo (PIL), for SINE's patches
    x0_base: torch.Tensor  # (1, C, h, w) the base image's latents
    cond: Any  # one-row Conditioning of the tuning prompt
    trainable: list  # the parameters the optimizer steps
    opt: torch.optim.Optimizer  # Adafactor
    gen: torch.Generator  # CPU: the noise, timesteps and patches of every step
    save_at: list[int]  # the steps whose checkpoint is saved
    base_state: dict[str, torch.Tensor] | None  # the pretrained weights (full tunes' deltas)
    amp: Any  # the autocast context (bf16) or a null one
    probes: list[float]  # auto_stop's probe losses up to the start step (tune_schedule.Stopper)


def _steps(
    run: _Run,
    start: int,
    history: list[float],
    progress: bool,
    on_step: Callable[[int, float], None] | None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> None:
    """The training loop from ``start`` to ``cfg.steps``, saving at ``save_at``; appends each
    step's loss to ``history``."""
    folder, bb, cfg, original, gen, amp = (
        run.folder,
        run.bb,
        run.cfg,
        run.original,
        run.gen,
        run.amp,
    )
    x0_base, cond, trainable, opt = run.x0_base, run.cond, run.trainable, run.opt
    save_at, base_state = run.save_at, run.base_state
    dev, module, b = bb.device, bb.module, cfg.batch_size
    bar = tqdm(range(start, cfg.steps), desc="tuning", disable=not progress, initial=start)
    bar.total = cfg.steps
    since = time.time()
    pos = patches.get(module, bb.patch_site)
    res = folder.manifest.resolution
    oh, ow = original.height, original.width
    cond_b = cond.expand(b)
    probe = Probe.make(bb, cfg, x0_base, cond, res) if cfg.auto_stop else None
    stopper = Stopper(cfg.auto_stop, list(run.probes))
    for step in bar:
        for g in opt.param_groups:  # the schedule's rate for this step (tune_schedule.lr_at)
            g["lr"] = lr_at(cfg, step)
        if cfg.patches:  # SINE: b random crops of the full-resolution image, encoded this step
            boxes = [patches.sample_box(gen, oh, ow, cfg.patch_min_frac) for _ in range(b)]
            crops = [pil_to_tensor(patches.crop_patch(original, bx, res)) for bx in boxes]
            x0 = bb.encode_image(torch.cat(crops))
            pos.box = torch.tensor([patches.normalize_box(bx, oh, ow) for bx in boxes])
        else:
            x0 = x0_base.expand(b, -1, -1, -1)
        noise = torch.randn((b, *x0_base.shape[1:]), generator=gen).to(dev, bb.dtype)
        t = squeeze(bb.sample_timesteps(b, gen, cfg.timestep_density, res), cfg.max_timestep)
        t = t.to(dev)
        noisy = bb.add_noise(x0, noise, t)
        target = bb.target(x0, noise, t)
        c = bb.training_cond(cond_b, gen, res)  # an SR stage's noise augmentation
        with amp:
            pred = bb.denoise(module, noisy, t, c)
        loss = bb.loss(pred, target, x0, noisy, t)
        loss.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        lv = loss.item()
        history.append(lv)
        bar.set_postfix(loss=f"{lv:.4f}")
        done = step + 1
        if on_step is not None:
            on_step(done, lv)
        stop = False
        if probe is not None and done % cfg.probe_every == 0:
            stop = stopper.add(probe.loss(bb, module, amp)) and done < cfg.steps
        if done in save_at or stop:
            prev = max([s for s in save_at if s < done], default=0)
            loss = sum(history[prev:done]) / (done - prev)  # mean since the previous ckpt
            weights, meta = adapters.checkpoint_tensors(module, cfg, bb, base_state)
            folder.save_checkpoint(
                done, weights, meta, loss, round(time.time() - since, 2), tuple(history)
            )
            opt_t, scalars = _flatten_optimizer(opt)
            scalars["probe"] = stopper.losses
            exact = {**adapters.trainable_state(module), **opt_t, "rng": gen.get_state()}
            save_resume_state(folder, done, exact, scalars, history)
            if on_checkpoint is not None:
                on_checkpoint(done)
        if stop:  # auto_stop: the probe stopped improving; this step is the last checkpoint
            if progress:
                bar.write(f"auto-stop at step {done}: the probe loss stopped improving")
            break
