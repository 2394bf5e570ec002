"""Train the embedded world model: (1) the VAE on rendered scenes (vae_train.py; optionally
(1b) a decoder-only fine-tune), (2) the UNet and the text encoder together on (scene, caption)
pairs, (3) export an fp16 diffusers folder.

    python -m unitune.embedded.train --work runs/world --out src/unitune/assets/world-model

Seeded, resumable (``--work`` holds safetensors training states; rerun the same command to go
on), progress bar with the loss, and a loss log (work/log.jsonl). Scenes are rendered on the
training device from parameters drawn in data-loader workers, so the GPU never waits for PIL.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..clip_vocab import load_clip_tokenizer
from ..fileio import atomic_save_safetensors, atomic_write_text
from ..world.scene import sample_scene, training_caption
from .arch import TINY, build_text_encoder, build_unet, scheduler_config
from .config import TrainConfig
from .layout import LayoutHead, layout_accuracy, layout_batch, layout_loss
from .trainstate import load_opt_tensors, log_record, opt_tensors, prefixed, unprefixed, warm_start
from .vae_train import finetune_decoder, scene_images, train_vae


class Batches(torch.utils.data.IterableDataset):
    """Endless (token ids (B, 77), texture std (B,), scenes, layout) batches; layout is
    (token ids (B, 77), colour ids (B, 9), shape ids (B, 9)) of other scenes, or None."""

    def __init__(self, cfg: TrainConfig, batch: int, start: int, with_text: bool = True):
        self.cfg, self.batch, self.start, self.with_text = cfg, batch, start, with_text

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        rng = np.random.default_rng([self.cfg.seed, self.start, wid])
        if info is not None:
            torch.set_num_threads(1)  # many workers: one thread each (not the main process)
        tok = load_clip_tokenizer() if self.with_text else None
        while True:
            scenes = [sample_scene(rng) for _ in range(self.batch)]
            ids = torch.zeros(0)
            if tok is not None:
                caps = [training_caption(s, rng, self.cfg.p_empty) for s in scenes]
                ids = tok(
                    caps, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
                ).input_ids
            std = torch.tensor([s.noise for s in scenes])  # texture noise is drawn on the device
            layout = None
            if tok is not None and self.cfg.layout > 0:
                layout = layout_batch(tok, rng, self.batch)
            yield ids, std, scenes, layout


def _loader(cfg: TrainConfig, batch: int, start: int, with_text: bool):
    ds = Batches(cfg, batch, start, with_text)
    return iter(
        torch.utils.data.DataLoader(
            ds,
            batch_size=None,
            num_workers=cfg.workers,
            collate_fn=lambda x: x,
            prefetch_factor=4 if cfg.workers else None,
            persistent_workers=False,
        )
    )


def loss_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, x0_cap: float) -> torch.Tensor:
    """(B,) weights of the per-sample epsilon losses: min(1/alpha_bar_t, x0_cap), or 1 if 0.

    An epsilon error e means an x0 error e * sqrt((1 - a) / a) (a = alpha_bar_t), so 1/a makes
    the loss the v-prediction loss; capped, so the last ~15% of t do not dominate."""
    if x0_cap <= 0:
        return torch.ones(t.shape, device=t.device)
    return (1 / alphas_cumprod[t]).clamp(max=x0_cap)


def train_diffusion(
    cfg: TrainConfig,
    work: Path,
    vae,
    dev: torch.device,
    progress: bool = True,
    time_limit: float | None = None,
):
    """Stage 2: UNet + text encoder from scratch; resumes from work/diffusion.safetensors."""
    from diffusers import DDPMScheduler

    torch.manual_seed(cfg.seed + 1)
    unet, te = build_unet(cfg.arch).to(dev), build_text_encoder(cfg.arch).to(dev)
    params = list(unet.parameters()) + list(te.parameters())
    emb_w = te.get_input_embeddings().weight
    # no weight decay on the token table: rows of tokens captions never use must stay put
    groups = [
        {"params": [p for p in params if p is not emb_w], "weight_decay": 0.01},
        {"params": [emb_w], "weight_decay": 0.0},
    ]
    # training-only read-out, appended last so older states' optimiser indices still match
    head = LayoutHead(cfg.arch.text_width).to(dev) if cfg.layout > 0 else None
    if head is not None:
        # 10x lr: the read-out must find the slots before its gradient into the text means much
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0, "lr_scale": 10.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    ema = [p.detach().clone().float() for p in params]
    state_file = work / "diffusion.safetensors"
    start = 0
    warm = work / "warm.safetensors"
    src = state_file if state_file.exists() else (warm if warm.exists() else None)
    if src is not None:
        t = load_file(src, device=str(dev))
        unet.load_state_dict(unprefixed("unet", t))
        te.load_state_dict(unprefixed("te", t), strict=False)
        if head is not None and "layout.queries" in t:
            head.load_state_dict(unprefixed("layout", t))
        ema = [t[f"ema.{i}"].float() for i in range(len(params))]
        if src == state_file:
            load_opt_tensors(opt, t)
            start = int(t["step"])
    if start >= cfg.steps:
        return unet, te, ema, start
    sched = DDPMScheduler.from_config(scheduler_config())
    sf = vae.config.scaling_factor
    alphas_cumprod = sched.alphas_cumprod.to(dev)  # (1000,), for the loss weights
    data = _loader(cfg, cfg.batch, start, with_text=True)
    gen = torch.Generator(dev).manual_seed(cfg.seed * 1000003 + start)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None
    bar = tqdm(
        range(start, cfg.steps),
        desc="unet+text",
        disable=not progress,
        initial=start,
        total=cfg.steps,
    )
    t_begin, run_loss, run_layout = time.time(), [], []

    def save(step: int) -> None:
        tensors = {**prefixed("unet", unet), **prefixed("te", te), **opt_tensors(opt)}
        if head is not None:
            tensors.update(prefixed("layout", head))
        tensors.update({f"ema.{i}": e for i, e in enumerate(ema)})
        tensors["step"] = torch.tensor(step)
        atomic_save_safetensors(tensors, state_file)

    step = start
    for step in bar:
        batch = next(data)
        ids = batch[0]
        with torch.no_grad():
            x = scene_images(batch, cfg.arch.resolution, dev, gen)[0]
            z = vae.encode(x).latent_dist.sample(generator=gen) * sf
        frac = min(1.0, (step + 1) / cfg.warmup)
        cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * frac * cos * g.get("lr_scale", 1.0)
        noise = torch.randn(z.shape, generator=gen, device=dev)
        t = torch.randint(0, 1000, (z.shape[0],), generator=gen, device=dev)
        noisy = sched.add_noise(z, noise, t)
        with amp or torch.autocast("cpu", enabled=False):
            emb = te(ids.to(dev))[0]  # last_hidden_state, exactly what SD pipelines feed
            pred = unet(noisy, t, encoder_hidden_states=emb).sample
        per = (pred.float() - noise).pow(2).mean(dim=(1, 2, 3))  # (B,)
        loss = (per * loss_weights(alphas_cumprod, t, cfg.x0_cap)).mean()
        if head is not None:
            lids, cols, shps = (v.to(dev) for v in batch[3])
            with amp or torch.autocast("cpu", enabled=False):
                states = te(lids)[0]
            logits = head(states)  # once: the loss and the logged accuracy share it
            loss = loss + cfg.layout * layout_loss(logits, cols, shps)
            run_layout.append(layout_accuracy(logits, cols, shps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        with torch.no_grad():
            d = min(cfg.ema, (1 + step) / (10 + step))  # short warm-up of the EMA
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - d)
        run_loss.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(run_loss[-50:]):.4f}")
        if (step + 1) % 200 == 0:
            rec = {
                "stage": "diffusion",
                "step": step + 1,
                "loss": float(np.mean(run_loss)),
                "sec": round(time.time() - t_begin, 1),
            }
            if run_layout:  # occupied slots read right (colour and shape) by the read-out
                rec["layout_acc"] = round(float(np.mean(run_layout)), 4)
            log_record(work, rec)
            run_loss, run_layout = [], []
        if (step + 1) % cfg.save_every == 0:
            save(step + 1)
        if time_limit and time.time() - t_begin > time_limit:
            break
    save(step + 1)
    return unet, te, ema, step + 1


def export(cfg: TrainConfig, vae, unet, te, ema, out: Path, done: dict | None = None) -> Path:
    """Write the EMA weights as an fp16 StableDiffusionPipeline folder (safetensors)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    with torch.no_grad():
        for p, e in zip(list(unet.parameters()) + list(te.parameters()), ema):
            p.copy_(e)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=te,
        tokenizer=load_clip_tokenizer(),
        unet=unet,
        scheduler=DDIMScheduler(**scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to("cpu", torch.float16)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    _portable(out)
    meta = {
        "arch": asdict(cfg.arch),
        "train": {k: v for k, v in asdict(cfg).items() if k != "arch"},
        # what actually ran (a --time-limit can stop before cfg.steps; --init-from warm-starts)
        "done": done or {},
    }
    atomic_write_text(out / "unitune_world.json", json.dumps(meta, indent=2) + "\n")
    return out


def _portable(out: Path) -> None:
    """Weights stay fp16 on disk, but every component loads as fp32 by default (CPU-safe):
    transformers 5 would otherwise keep the text encoder in the saved dtype while diffusers
    upcasts the UNet, and a plain ``from_pretrained(path)`` would mix dtypes. The tokenizer is
    stored as CLIP's own vocab.json + merges.txt (smaller than tokenizer.json, any version)."""
    from ..clip_vocab import ASSET_DIR

    cfg_path = out / "text_encoder" / "config.json"
    c = json.loads(cfg_path.read_text())
    c["dtype"] = c["torch_dtype"] = "float32"
    atomic_write_text(cfg_path, json.dumps(c, indent=2, sort_keys=True) + "\n")
    tok = out / "tokenizer"
    files = {name: (ASSET_DIR / name).read_bytes() for name in ("vocab.json", "merges.txt")}
    for f in tok.iterdir():
        if f.name != "tokenizer_config.json":
            f.unlink()
    for name, data in files.items():
        (tok / name).write_bytes(data)


def train(
    cfg: TrainConfig,
    work: str | Path,
    out: str | Path | None,
    device: str = "auto",
    progress: bool = True,
    time_limit: float | None = None,
    init_from: str | Path | None = None,
) -> Path | None:
    """All stages; rerun to resume. ``time_limit`` applies to the decoder stage and then to
    the diffusion stage. Exports to ``out`` once the diffusion stage is complete or stopped by
    the time limit (so a partial model can be inspected); not while the decoder stage is."""
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if init_from:
        warm_start(Path(init_from), work)
    vae = train_vae(cfg, work, dev, _loader(cfg, cfg.vae_batch, 0, False), progress)
    vae.requires_grad_(False).eval()
    dec_steps = 0
    if cfg.decoder_steps:
        # its own scene stream, reseeded from the step it resumes at
        data = lambda start: _loader(cfg, cfg.decoder_batch, 10**6 + start, False)  # noqa: E731
        vae, dec_steps = finetune_decoder(cfg, work, vae, dev, data, progress, time_limit)
        if dec_steps < cfg.decoder_steps:
            return None  # stopped by the time limit: rerun to go on
    unet, te, ema, steps = train_diffusion(cfg, work, vae, dev, progress, time_limit)
    done = {
        "diffusion_steps": steps,
        "decoder_steps": dec_steps,
        "init_from": str(init_from) if init_from else None,
    }
    return export(cfg, vae, unet, te, ema, Path(out), done) if out else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unitune.embedded.train", description=__doc__)
    ap.add_argument("--work", required=True, help="training state folder (resumable)")
    ap.add_argument("--out", help="export the fp16 diffusers model here")
    ap.add_argument("--steps", type=int, help="UNet+text steps (default 30000)")
    ap.add_argument("--vae-steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--time-limit", type=float, help="seconds of diffusion training this run")
    ap.add_argument("--tiny", action="store_true", help="tiny architecture (smoke tests)")
    ap.add_argument("--init-from", help="warm start from an exported model folder")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--ema", type=float, help="EMA decay (default 0.9995; shorter runs: less)")
    ap.add_argument("--x0-cap", type=float, help="loss weight min(1/alpha_bar, cap); 0 = plain")
    ap.add_argument("--layout", type=float, help="layout read-out loss weight; 0 = off")
    ap.add_argument("--object-weight", type=float, help="extra VAE loss weight on objects")
    ap.add_argument("--decoder-steps", type=int, help="decoder-only fine-tune steps (stage 1b)")
    ap.add_argument("--save-every", type=int)
    ap.add_argument("--seed", type=int, help="seeds the scene stream and noise (default 0)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    cfg = TrainConfig(arch=TINY) if a.tiny else TrainConfig()
    over = {
        "steps": a.steps,
        "vae_steps": a.vae_steps,
        "batch": a.batch,
        "workers": a.workers,
        "lr": a.lr,
        "warmup": a.warmup,
        "ema": a.ema,
        "x0_cap": a.x0_cap,
        "save_every": a.save_every,
        "layout": a.layout,
        "object_weight": a.object_weight,
        "decoder_steps": a.decoder_steps,
        "seed": a.seed,
    }
    cfg = replace(cfg, **{k: v for k, v in over.items() if v is not None})
    out = train(cfg, a.work, a.out, a.device, not a.quiet, a.time_limit, a.init_from)
    if out:
        print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
