"""Size of one tune checkpoint for real Stable Diffusion UNets, without downloading them.

The UNets are built on the meta device from their published architecture configs (no weights),
the same LoRA adapters unitune trains are injected with PEFT, and parameters are counted.
    python scripts/checkpoint_sizes.py --out docs/checkpoint_sizes.json
full: fp16 delta = 2 bytes x UNet parameters; lora: fp32 adapter weights = 4 bytes x LoRA params;
the full tune folder of the default schedule: one delta per save_at step (resume state deleted).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from unitune.adapters import add_lora, lora_config_dict
from unitune.backbones.random_weights import UNETS
from unitune.backbones.sd import UNET_LORA, UNET_LORA_CONV
from unitune.config import TUNE_SCHEDULES, TuneConfig

SD_UNET = SimpleNamespace(lora_targets=UNET_LORA, lora_conv_targets=UNET_LORA_CONV)  # its targets

# published UNet configs (stable-diffusion-v1-5 and stable-diffusion-2-1 unet/config.json)
ARCHS = {
    "SD1.5": {"cross_attention_dim": 768, "attention_head_dim": 8, "sample_size": 64},
    "SD2.1": {
        "cross_attention_dim": 1024,
        "attention_head_dim": [5, 10, 20, 20],
        "use_linear_projection": True,
        "sample_size": 96,
    },
    "SDXL": UNETS["sdxl"],  # stable-diffusion-xl-base-1.0 (its LoRA targets are SD's)
}


def count(arch: dict, cfg: TuneConfig | None) -> int:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel(**arch)
        if cfg is None:
            return sum(p.numel() for p in unet.parameters())
        add_lora(unet, lora_config_dict(cfg, SD_UNET))
    return sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/checkpoint_sizes.json")
    a = ap.parse_args()
    rows = {}
    for name, arch in ARCHS.items():
        n = count(arch, None)
        row = {"unet_params": n, "full_fp16_delta_MB": round(n * 2 / 1e6, 1)}
        for rank in (4, 16, 64):
            for conv in (False, True):
                cfg = TuneConfig(method="lora", lora_rank=rank, lora_conv=conv)
                k = count(arch, cfg)
                row[f"lora_r{rank}{'_conv' if conv else ''}_MB"] = round(k * 4 / 1e6, 2)
        # the tune folder of the default schedule holds one checkpoint per save_at step
        n_ck = len(TUNE_SCHEDULES["full"].save_at)  # LoRA's default has as many
        row[f"full_tune_folder_{n_ck}_checkpoints_GB"] = round(n_ck * n * 2 / 1e9, 2)
        rows[name] = row
        print(name, row)
    Path(a.out).write_text(json.dumps({"bytes_per_MB": 1e6, **rows}, indent=2) + "\n")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
