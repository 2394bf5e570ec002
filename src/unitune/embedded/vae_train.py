"""The world model's VAE stages (used by train.py): (1) the VAE from scratch, (1b) optionally a
decoder fine-tune with the encoder frozen.

Objects cover a few percent of a scene's pixels, so a per-pixel loss is met by the background
and leaves objects as coloured blobs: v1's VAE decoded 26% of single objects as the wrong
shape and 19% as the wrong colour (oracle on reconstructions of the held-out scenes), which
caps every generated sample. ``object_weight`` scales the loss on object pixels (and a 1-pixel
rim around them). The decoder fine-tune keeps the encoder, hence the latent space, so a UNet
trained on it stays valid (the same trick as SD's fine-tuned ft-MSE decoder).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..fileio import atomic_save_safetensors
from ..world.render import render
from .arch import build_vae
from .trainstate import load_opt_tensors, log_record, opt_tensors, prefixed, unprefixed

if TYPE_CHECKING:
    from .config import TrainConfig


def scene_images(batch, size: int, dev, gen: torch.Generator, object_weight: float = 0.0):
    """Images (B, 3, size, size) in [-1, 1] and per-pixel loss weights (B, 1, size, size),
    1 on the background and 1 + object_weight on (and next to) objects."""
    _, std, scenes, _ = batch
    noise = torch.randn((len(scenes), 3, size, size), generator=gen, device=dev)
    noise = noise * std.to(dev).view(-1, 1, 1, 1)
    x = render(scenes, size, dev, noise)
    w = torch.ones((len(scenes), 1, size, size), device=dev)
    if object_weight > 0:
        # the same scene with no objects (same texture noise): where it differs is an object
        bare = render([replace(s, objects=()) for s in scenes], size, dev, noise)
        obj = ((x - bare).abs().amax(1, keepdim=True) > 0.02).float()
        w = w + object_weight * F.max_pool2d(obj, 3, 1, 1)
    return x * 2 - 1, w


def recon_loss(rec: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted L1 + L2, normalised by the weights so its scale does not depend on them."""
    err = rec - x
    return ((err.abs() + err.pow(2)) * w).mean() / w.mean()


def _lr(base: float, step: int, steps: int, warmup: int = 200) -> float:
    return base * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * (1 - step / steps))


def train_vae(cfg: TrainConfig, work: Path, dev: torch.device, data, progress: bool = True):
    """Stage 1. Returns the trained VAE with its scaling factor set from data."""
    done = work / "vae.safetensors"
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg.arch).to(dev)
    if done.exists():
        t = load_file(done)
        vae.load_state_dict(unprefixed("vae", t))
        vae.register_to_config(scaling_factor=float(t["scaling_factor"]))
        return vae
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator(dev).manual_seed(cfg.seed)
    bar = tqdm(range(cfg.vae_steps), desc="vae", disable=not progress)
    r = cfg.arch.resolution
    for step in bar:
        x, w = scene_images(next(data), r, dev, gen, cfg.object_weight)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg.vae_lr, step, cfg.vae_steps)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = recon_loss(rec, x, w) + cfg.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        l1 = (rec - x).abs().mean().item()
        bar.set_postfix(l1=f"{l1:.4f}")
        if step % 100 == 0:
            log_record(work, {"stage": "vae", "step": step, "l1": l1, "loss": loss.item()})
    vae.eval()
    with torch.no_grad():  # scale latents to unit variance, as SD's 0.18215 does for its VAE
        zs = torch.cat(
            [
                vae.encode(scene_images(next(data), r, dev, gen)[0]).latent_dist.mean
                for _ in range(8)
            ]
        )
    sf = float(1.0 / zs.std())
    vae.register_to_config(scaling_factor=sf)
    atomic_save_safetensors({**prefixed("vae", vae), "scaling_factor": torch.tensor(sf)}, done)
    log_record(work, {"stage": "vae", "done": True, "scaling_factor": sf, "l1": l1})
    return vae


def finetune_decoder(
    cfg: TrainConfig,
    work: Path,
    vae,
    dev: torch.device,
    data_from,
    progress: bool = True,
    time_limit: float | None = None,
):
    """Stage 1b: ``cfg.decoder_steps`` steps on the decoder alone (object-weighted loss), the
    encoder and the scaling factor untouched. Resumable from work/decoder.safetensors;
    ``data_from(step)`` gives the batch iterator for a run starting at ``step``."""
    import time

    state_file = work / "decoder.safetensors"
    dec = [vae.post_quant_conv, vae.decoder]
    params = [p for m in dec for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    start = 0
    if state_file.exists():
        t = load_file(state_file, device=str(dev))
        vae.load_state_dict(unprefixed("vae", t))
        load_opt_tensors(opt, t)
        start = int(t["step"])
    if start >= cfg.decoder_steps:
        return vae, start
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    data = data_from(start)
    gen = torch.Generator(dev).manual_seed(cfg.seed * 7919 + start)
    bar = tqdm(
        range(start, cfg.decoder_steps),
        desc="decoder",
        disable=not progress,
        initial=start,
        total=cfg.decoder_steps,
    )
    r, t_begin, run = cfg.arch.resolution, time.time(), []

    def save(step: int) -> None:
        t = {**prefixed("vae", vae), **opt_tensors(opt), "step": torch.tensor(step)}
        atomic_save_safetensors(t, state_file)

    step = start
    for step in bar:
        x, w = scene_images(next(data), r, dev, gen, cfg.object_weight)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg.decoder_lr, step, cfg.decoder_steps, warmup=50)
        with torch.no_grad():  # the latents the UNet is trained on: posterior samples
            z = vae.encode(x).latent_dist.sample(generator=gen)
        loss = recon_loss(vae.decode(z).sample, x, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.append(loss.item())
        if (step + 1) % 100 == 0:
            bar.set_postfix(loss=f"{sum(run) / len(run):.4f}")
            log_record(
                work,
                {
                    "stage": "decoder",
                    "step": step + 1,
                    "loss": sum(run) / len(run),
                    "sec": round(time.time() - t_begin, 1),
                },
            )
            run = []
            save(step + 1)
        if time_limit and time.time() - t_begin > time_limit:
            break
    save(step + 1)
    vae.requires_grad_(False).eval()
    return vae, step + 1
