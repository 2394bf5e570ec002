"""The embedded pixel cascade ``world-if``: DeepFloyd IF's format at world scale, trained on CPU.

Stage I: a 16 px pixel-space UNet (IF's blocks: ResNet down/up-sampling, attention with added
text keys and values, the pooled text added to the time embedding, scale-shift norms) that
predicts [eps, learned variance]; stage II: a 16 -> 64 px super-resolution UNet of the same
kind whose input is the noisy 64 px image concatenated with the 16 px image upscaled bilinearly
and noise-augmented, the augmentation level as its class label. One T5-style encoder (3 layers,
64 wide) with a Unigram tokenizer trained on the world's captions conditions both. 64 px is the
world model's size, so the bench's oracle and masks apply to the cascade's output unchanged.

    python -m unitune.embedded.cascade --work runs/cascade --out src/unitune/assets

Stage I and the text encoder train together from scratch; stage II trains in the same loop on
the current text embeddings (no gradient into the encoder). Both take the hybrid loss
(learned_variance.py), so their variance outputs are trained too. Seeded and resumable: rerun
the same command to go on from ``--work``. Exports two fp16 folders, ``world-if`` (IFPipeline)
and ``world-if-sr`` (IFSuperResolutionPipeline).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..fileio import atomic_save_safetensors, atomic_write_text
from ..learned_variance import hybrid_loss
from ..world.scene import FULL, caption, sample_scene, training_caption
from .t5_vocab import t5_tokenizer, train_unigram
from .trainstate import load_opt_tensors, log_record, opt_tensors, prefixed, unprefixed
from .vae_train import scene_images

TIED = "te.encoder.embed_tokens.weight"  # the same tensor as te.shared.weight (saved once)
MAX_LENGTH = 77  # IF's prompt length (its T5 pads and cuts every prompt to 77 tokens)


@dataclass(frozen=True)
class CascadeConfig:
    base_res: int = 16  # stage I's size (pixels)
    sr_res: int = 64  # stage II's output size (the world's)
    text_width: int = 64  # T5 d_model
    text_layers: int = 3
    vocab: int = 256  # Unigram pieces asked of the trainer (the world needs fewer)
    base_channels: tuple[int, ...] = (64, 96, 128)  # 16 -> 8 -> 4 px
    sr_channels: tuple[int, ...] = (32, 48, 96, 128)  # 64 -> 32 -> 16 -> 8 px
    seed: int = 0
    steps: int = 3000  # iterations, each one stage I and one stage II step
    batch: int = 32  # stage I
    sr_batch: int = 16
    lr: float = 5e-4  # AdamW, warm-up then cosine to 10%
    warmup: int = 100
    ema: float = 0.999
    p_empty: float = 0.1  # empty captions for classifier-free guidance
    x0_cap: float = 50.0  # eps-MSE weight min(1/alpha_bar_t, cap), as the latent model (train.py)
    aug_max: int = 500  # stage II's noise-augmentation levels are uniform in [0, aug_max)
    save_every: int = 100


def scheduler(sample_max_value: float):
    """IF's sampling scheduler: DDPM, cosine betas, learned-range variances, dynamic
    thresholding."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=sample_max_value,
        prediction_type="epsilon",
        variance_type="learned_range",
    )


def noising_scheduler():
    """Stage II's noise augmentation of its low-resolution input (IF's image_noising_scheduler)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


def if_unet(
    res: int, in_channels: int, channels: tuple[int, ...], text_width: int, layers, sr: bool
):
    """An IF-style UNet2DConditionModel: attention (self + added text K/V) on the two lowest
    levels, cross width = the last level's (IF's group-normed cross input needs a multiple of
    32); stage II adds the augmentation level as a timestep-embedded class label."""
    from diffusers import UNet2DConditionModel

    n = len(channels)
    extra = dict(class_embed_type="timestep", mid_block_scale_factor=1.414) if sr else {}
    return UNet2DConditionModel(
        sample_size=res,
        in_channels=in_channels,
        out_channels=6,
        block_out_channels=channels,
        layers_per_block=layers,
        down_block_types=("ResnetDownsampleBlock2D",) * (n - 2)
        + ("SimpleCrossAttnDownBlock2D",) * 2,
        up_block_types=("SimpleCrossAttnUpBlock2D",) * 2 + ("ResnetUpsampleBlock2D",) * (n - 2),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        cross_attention_dim=channels[-1],
        encoder_hid_dim=text_width,
        attention_head_dim=32,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        norm_num_groups=16,
        **extra,
    )


def text_encoder(cfg: CascadeConfig, vocab_size: int):
    """T5 v1.1's encoder (gated-GELU, relative positions, untied) at world scale."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=cfg.text_width,
            d_kv=16,
            d_ff=2 * cfg.text_width,
            num_layers=cfg.text_layers,
            num_heads=4,
            relative_attention_num_buckets=16,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def tokenizer(cfg: CascadeConfig):
    """The Unigram tokenizer, trained on 4000 captions of training scenes (seeded)."""
    rng = np.random.default_rng(cfg.seed)
    lines = []
    for _ in range(2000):
        s = sample_scene(rng)
        lines += [caption(s, rng, FULL), training_caption(s, rng, 0.0)]
    return t5_tokenizer(train_unigram(lines, cfg.vocab), MAX_LENGTH)


def encode(tok, te, captions: list[str], dev) -> torch.Tensor:
    """As IFPipeline.encode_prompt: lower-cased, padded to 77, the attention mask to T5."""
    t = tok(
        [c.lower().strip() for c in captions],
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
        return_tensors="pt",
    )
    return te(t.input_ids.to(dev), attention_mask=t.attention_mask.to(dev))[0]


def downsample(x: torch.Tensor, res: int) -> torch.Tensor:
    """Anti-aliased bicubic resize (as the tune's Lanczos resize of a photo), kept in [-1, 1]."""
    return F.interpolate(x, size=(res, res), mode="bicubic", antialias=True).clamp(-1, 1)


def upsample(low: torch.Tensor, res: int) -> torch.Tensor:
    """Stage II's view of its input: bilinear, corners aligned (IFSuperResolutionPipeline)."""
    return F.interpolate(low, size=(res, res), mode="bilinear", align_corners=True)


def _lr(cfg: CascadeConfig, step: int) -> float:
    cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) * cos


def train(
    cfg: CascadeConfig,
    work: Path,
    out: Path | None,
    progress: bool = True,
    time_limit: float | None = None,
) -> dict:
    """Train (resuming from work/cascade.safetensors) and, when ``out`` is given, export."""
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "config.json", json.dumps(asdict(cfg), indent=2))
    tok = tokenizer(cfg)
    torch.manual_seed(cfg.seed)
    te = text_encoder(cfg, len(tok)).to(dev)
    base = if_unet(cfg.base_res, 3, cfg.base_channels, cfg.text_width, 2, False).to(dev)
    sr = if_unet(cfg.sr_res, 6, cfg.sr_channels, cfg.text_width, 1, True).to(dev)
    p1 = list(base.parameters()) + list(te.parameters())
    p2 = list(sr.parameters())
    opt1 = torch.optim.AdamW(p1, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.01)
    opt2 = torch.optim.AdamW(p2, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema = [p.detach().clone() for p in p1 + p2]
    state_file, start = work / "cascade.safetensors", 0
    if state_file.exists():
        t = load_file(state_file, device=str(dev))
        base.load_state_dict(unprefixed("base", t))
        sr.load_state_dict(unprefixed("sr", t))
        te.load_state_dict(unprefixed("te", t), strict=False)  # TIED is te.shared
        load_opt_tensors(opt1, unprefixed("o1", t))
        load_opt_tensors(opt2, unprefixed("o2", t))
        ema = [t[f"ema.{i}"] for i in range(len(ema))]
        start = int(t["step"])
    sched, aug = scheduler(1.5), noising_scheduler()
    ab = sched.alphas_cumprod.to(dev)
    rng = np.random.default_rng([cfg.seed, start])
    gen = torch.Generator(dev).manual_seed(cfg.seed * 1000003 + start)

    def save(step: int) -> None:
        text = {k: v for k, v in prefixed("te", te).items() if k != TIED}
        tensors = {
            **prefixed("base", base),
            **prefixed("sr", sr),
            **text,
            **{f"o1.{k}": v for k, v in opt_tensors(opt1).items()},
            **{f"o2.{k}": v for k, v in opt_tensors(opt2).items()},
            **{f"ema.{i}": e for i, e in enumerate(ema)},
            "step": torch.tensor(step),
        }
        atomic_save_safetensors(tensors, state_file)

    def batch(n: int) -> tuple[torch.Tensor, list[str]]:
        scenes = [sample_scene(rng) for _ in range(n)]
        caps = [training_caption(s, rng, cfg.p_empty) for s in scenes]
        std = torch.tensor([s.noise for s in scenes])
        return scene_images((None, std, scenes, None), cfg.sr_res, dev, gen)[0], caps

    def loss_of(unet, x0, emb, weight_cap: float, **kw) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=gen, device=dev)
        t = torch.randint(0, 1000, (x0.shape[0],), generator=gen, device=dev)
        x_t = sched.add_noise(x0, noise, t)
        inp = torch.cat([x_t, kw.pop("up")], 1) if "up" in kw else x_t
        out = unet(inp, t, encoder_hidden_states=emb, **kw).sample
        w = (1 / ab[t]).clamp(max=weight_cap)  # as train.loss_weights
        return hybrid_loss(ab, out, noise, x0, x_t, t, w)

    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        disable=not progress,
        desc="cascade",
    )
    began, l1s, l2s, step = time.time(), [], [], start
    base.train(), sr.train(), te.train()
    for step in bar:
        for o in (opt1, opt2):
            for g in o.param_groups:
                g["lr"] = _lr(cfg, step)
        x64, caps = batch(cfg.batch)
        x16 = downsample(x64, cfg.base_res)
        emb = encode(tok, te, caps, dev)
        l1 = loss_of(base, x16, emb, cfg.x0_cap)
        opt1.zero_grad(set_to_none=True)
        l1.backward()
        torch.nn.utils.clip_grad_norm_(p1, 1.0)
        opt1.step()
        # stage II on the first sr_batch images of the batch, on the text as it is now
        k = cfg.sr_batch
        level = torch.randint(0, cfg.aug_max, (k,), generator=gen, device=dev)
        up = upsample(x16[:k], cfg.sr_res)
        up = aug.add_noise(up, torch.randn(up.shape, generator=gen, device=dev), level)
        l2 = loss_of(sr, x64[:k], emb[:k].detach(), cfg.x0_cap, up=up, class_labels=level)
        opt2.zero_grad(set_to_none=True)
        l2.backward()
        torch.nn.utils.clip_grad_norm_(p2, 1.0)
        opt2.step()
        with torch.no_grad():
            d = min(cfg.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach() for p in p1 + p2], 1 - d)
        l1s.append(l1.item())
        l2s.append(l2.item())
        if step % 20 == 0:
            bar.set_postfix(base=f"{np.mean(l1s[-20:]):.4f}", sr=f"{np.mean(l2s[-20:]):.4f}")
        if (step + 1) % 100 == 0:
            log_record(
                work,
                {
                    "step": step + 1,
                    "base_loss": round(float(np.mean(l1s)), 5),
                    "sr_loss": round(float(np.mean(l2s)), 5),
                    "sec": round(time.time() - began, 1),
                },
            )
            l1s, l2s = [], []
        if (step + 1) % cfg.save_every == 0:
            save(step + 1)
        if time_limit and time.time() - began > time_limit:
            break
    done = step + 1 if cfg.steps > start else start
    if done > start:
        save(done)
    if out is not None:
        with torch.no_grad():
            for p, e in zip(p1 + p2, ema):
                p.copy_(e)
        export(cfg, tok, te, base, sr, out, done)
    return {"steps": done}


def export(cfg: CascadeConfig, tok, te, base, sr, out: Path, steps: int) -> None:
    """Two fp16 diffusers folders that IFPipeline / IFSuperResolutionPipeline load as they are."""
    from diffusers import IFPipeline, IFSuperResolutionPipeline

    none = dict(
        safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False
    )
    stage1 = IFPipeline(tokenizer=tok, text_encoder=te, unet=base, scheduler=scheduler(1.5), **none)
    stage2 = IFSuperResolutionPipeline(
        tokenizer=tok,
        text_encoder=te,
        unet=sr,
        scheduler=scheduler(1.0),
        image_noising_scheduler=noising_scheduler(),
        **none,
    )
    meta = {"arch_train": asdict(cfg), "done": {"steps": steps}}
    for name, pipe in (("world-if", stage1), ("world-if-sr", stage2)):
        folder = out / name
        pipe.to("cpu", torch.float16)
        pipe.save_pretrained(folder, safe_serialization=True)
        cfg_path = folder / "text_encoder" / "config.json"
        c = json.loads(cfg_path.read_text())  # load as fp32 by default, as the latent model
        c["dtype"] = c["torch_dtype"] = "float32"
        atomic_write_text(cfg_path, json.dumps(c, indent=2, sort_keys=True) + "\n")
        partner = {"sr_model": "world-if-sr"} if name == "world-if" else {}
        atomic_write_text(
            folder / "unitune_cascade.json", json.dumps({**meta, **partner}, indent=2) + "\n"
        )
        pipe.to("cpu", torch.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unitune.embedded.cascade", description=__doc__)
    ap.add_argument("--work", required=True, help="training state folder (resumable)")
    ap.add_argument("--out", help="export world-if/ and world-if-sr/ under this folder")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--time-limit", type=float, help="seconds of training this run")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = CascadeConfig() if a.steps is None else replace(CascadeConfig(), steps=a.steps)
    done = train(cfg, Path(a.work), Path(a.out) if a.out else None, not a.quiet, a.time_limit)
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
