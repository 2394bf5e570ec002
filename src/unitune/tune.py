"""UniTune fine-tuning (§3.2): pairs (base image, rare-token prompt), one run, several checkpoints.

The base image is VAE-encoded once and the prompt text-encoded once; each step is a batch of the
same latent with independent noise and timesteps. Weights are checkpointed at ``save_at`` steps;
an exact training state (fp32 weights, Adafactor state, RNG) rides along so an interrupted run
resumes bit-for-bit from its last checkpoint.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm.auto import tqdm
from transformers.optimization import Adafactor

from . import adapters, patches
from .checks import check_tune, settings_dict
from .config import DEFAULT_MODEL, TuneConfig
from .errors import UserError
from .fileio import atomic_save_safetensors
from .images import fit_image, pil_to_tensor
from .models import Components, encode_image, encode_prompts, load_components
from .tunefolder import (
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
    comp: Components | None = None,
    model_config: str | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TuneFolder:
    """Fine-tune ``model`` on one image into the tune folder ``out``; resumes if it exists."""
    out = Path(out)
    plan = check_tune(image, out, cfg, model, model_config, overwrite)  # before any model loads
    img, sha, folder = plan.image, plan.sha256, plan.resume
    comp = comp or load_components(model, device, model_config=model_config)
    digest = comp.digest  # of the weights as loaded (models.weights_digest)
    # absent in manifests written before it existed
    if folder is not None and folder.manifest.get("model_digest", digest) != digest:
        raise UserError(
            f"{out} holds a tune of a different model weights",
            "pass --overwrite to start fresh, or another --out",
        )
    if plan.clear:  # --overwrite: only now that the model has loaded
        shutil.rmtree(out)
    res = cfg.resolution or comp.resolution
    fitted, placement = fit_image(img, (res, res), cfg.resize)
    if folder is None:
        folder = TuneFolder.create(
            out,
            {
                "model": model,
                "model_path": comp.model_ref,
                "model_digest": digest,  # models.weights_digest: the same name, other weights?
                "image": {"source": str(image), "sha256": sha, "size": list(img.size)},
                "placement": placement.to_dict(),
                "resolution": [res, res],
                "prompt": cfg.prompt(),
                "settings": settings_dict(cfg),
                "versions": versions(),
                "status": "running",
                "checkpoints": {},
                "loss_history": [],
            },
        )
        img.save(out / "original.png")
        fitted.save(out / "base.png")
        latents = encode_image(comp, pil_to_tensor(fitted))
        atomic_save_safetensors({"latents": latents.cpu()}, out / "base_latents.safetensors")

    _train(folder, comp, cfg, img, progress, on_step)
    return folder


def _train(
    folder: TuneFolder,
    comp: Components,
    cfg: TuneConfig,
    original,
    progress: bool,
    on_step: Callable[[int, float], None] | None,
) -> None:
    dev = comp.device
    cuda = dev.type == "cuda"
    latent = folder.base_latents().to(dev, comp.dtype)  # (1, 4, h, w)
    emb = encode_prompts(comp, [cfg.prompt()])  # (1, 77, D), text encoder frozen
    unet = comp.unet
    trainable = adapters.make_trainable(unet, cfg)
    opt = Adafactor(
        trainable,
        lr=cfg.learning_rate(),
        scale_parameter=False,
        relative_step=False,
        warmup_init=False,
    )
    noise_sched = DDPMScheduler.from_config(comp.scheduler_config)
    gen = torch.Generator().manual_seed(cfg.seed)  # CPU: same noise on any device
    start = 0
    history: list[float] = list(folder.manifest.get("loss_history", []))
    # full tunes store deltas against the PRETRAINED weights: snapshot before a resume loads
    base_state = adapters.base_snapshot(unet, cfg)
    resume = load_resume_state(folder)
    if resume is not None:
        start, tensors, scalars = resume
        adapters.load_trainable_state(unet, cfg, tensors)
        _restore_optimizer(opt, tensors, scalars)
        gen.set_state(tensors["rng"])
        history = history[:start]
    # checkpoints past --steps are dropped; the last step is always saved
    save_at = sorted({s for s in cfg.save_at if s <= cfg.steps} | ({cfg.steps} - {0}))
    if folder.manifest.get("status") == "complete" or start >= cfg.steps:
        folder.manifest["status"] = "complete"
        folder.save_manifest()
        return
    grad_ckpt = cfg.gradient_checkpointing == "on" or (
        cfg.gradient_checkpointing == "auto" and cuda
    )
    if grad_ckpt and hasattr(unet, "enable_gradient_checkpointing"):
        unet.enable_gradient_checkpointing()
    bf16 = cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and cuda)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    unet.train()
    b = cfg.batch_size
    t_max = noise_sched.config.num_train_timesteps
    bar = tqdm(range(start, cfg.steps), desc="tuning", disable=not progress, initial=start)
    bar.total = cfg.steps
    since = time.time()
    pos = patches.get(unet)
    res = tuple(folder.manifest["resolution"])
    oh, ow = original.height, original.width
    for step in bar:
        if cfg.patches:  # SINE: b random crops of the full-resolution image, encoded this step
            boxes = [patches.sample_box(gen, oh, ow, cfg.patch_min_frac) for _ in range(b)]
            crops = [pil_to_tensor(patches.crop_patch(original, bx, res)) for bx in boxes]
            x0 = encode_image(comp, torch.cat(crops)).to(comp.dtype)
            pos.box = torch.tensor([patches.normalize_box(bx, oh, ow) for bx in boxes])
        else:
            x0 = latent.expand(b, -1, -1, -1)
        noise = torch.randn((b, *latent.shape[1:]), generator=gen).to(dev, comp.dtype)
        t = torch.randint(0, t_max, (b,), generator=gen).to(dev)
        noisy = noise_sched.add_noise(x0, noise, t)
        if comp.prediction_type == "v_prediction":
            target = noise_sched.get_velocity(x0, noise, t)
        else:
            target = noise
        with amp:
            pred = unet(noisy, t, encoder_hidden_states=emb.expand(b, -1, -1)).sample
        loss = F.mse_loss(pred.float(), target.float())
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
        if done in save_at:
            prev = max([s for s in save_at if s < done], default=0)
            record = {
                "loss": sum(history[prev:done]) / (done - prev),  # mean since the previous ckpt
                "seconds": round(time.time() - since, 2),
            }
            weights, meta = adapters.checkpoint_tensors(unet, cfg, base_state)
            folder.manifest["loss_history"] = history
            folder.save_checkpoint(done, weights, meta, record)
            state = adapters.trainable_state(unet, cfg)
            opt_t, scalars = _flatten_optimizer(opt)
            save_resume_state(folder, done, {**state, **opt_t, "rng": gen.get_state()}, scalars)
    unet.eval()
    if pos is not None:
        pos.box = None  # back to "the whole image"
    if grad_ckpt and hasattr(unet, "disable_gradient_checkpointing"):
        unet.disable_gradient_checkpointing()
    folder.manifest["status"] = "complete"
    folder.manifest["loss_history"] = history
    folder.save_manifest()
    resume_file = folder.path / "checkpoints" / "resume.safetensors"
    if resume_file.exists():
        resume_file.unlink()  # exact state is only needed while a run can still be resumed
