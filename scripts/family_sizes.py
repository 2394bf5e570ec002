"""Parameter counts and tune-checkpoint sizes of the 2026 families' released models, without
downloading them: each network is built on the meta device from its published config (no
weights are allocated), the LoRA adapters unitune trains are injected with PEFT, and
parameters are counted.

    python scripts/family_sizes.py --out docs/family_sizes.json

Each count is checked against the size its model card states, at the card's precision ("4B":
3.5 - 4.5 B; "8.29B": to 0.005 B); the script exits non-zero if one is off, which would mean a
config here is not the released one. full: the fp16 delta (2 bytes x transformer parameters)
per checkpoint, and the default full schedule's folder; lora: fp32 adapter weights (4 bytes x
LoRA params).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from unitune.adapters import add_lora, lora_config_dict
from unitune.backbones.flux2 import FLUX2_FF, FLUX2_LORA
from unitune.backbones.qwenimage import QWEN_FF, QWEN_LORA
from unitune.backbones.zimage import ZIMAGE_FF, ZIMAGE_LORA
from unitune.config import TUNE_SCHEDULES, TuneConfig

# transformer/config.json of Tongyi-MAI/Z-Image-Turbo (Z-Image's base has the same shapes)
ZIMAGE = dict(
    all_patch_size=(2,),
    all_f_patch_size=(1,),
    in_channels=16,
    dim=3840,
    n_layers=30,
    n_refiner_layers=2,
    n_heads=30,
    n_kv_heads=30,
    norm_eps=1e-5,
    qk_norm=True,
    cap_feat_dim=2560,
    rope_theta=256.0,
    t_scale=1000.0,
    axes_dims=[32, 48, 48],
    axes_lens=[1536, 512, 512],
)
QWEN3_4B = dict(  # text_encoder/config.json of Z-Image-Turbo: Qwen3-4B
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    tie_word_embeddings=True,
)
QWENIMAGE = dict(  # transformer/config.json of Qwen/Qwen-Image (and Qwen-Image-2512)
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=60,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=3584,
    axes_dims_rope=(16, 56, 56),
)
QWEN25_VL_7B = dict(  # text_encoder/config.json of Qwen/Qwen-Image: Qwen2.5-VL-7B-Instruct
    text_config=dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    ),
    vision_config=dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=3584,
        fullatt_block_indexes=[7, 15, 23, 31],
    ),
    tie_word_embeddings=False,
)
FLUX2_DEV = dict(  # transformer/config.json of black-forest-labs/FLUX.2-dev
    num_layers=8,
    num_single_layers=48,
    attention_head_dim=128,
    num_attention_heads=48,
    joint_attention_dim=15360,
    guidance_embeds=True,
)
KLEIN = {  # transformer/config.json of FLUX.2-klein-4B / -9B (base and distilled alike)
    "4B": dict(
        num_layers=5, num_single_layers=20, num_attention_heads=24, joint_attention_dim=7680
    ),
    "9B": dict(
        num_layers=8, num_single_layers=24, num_attention_heads=32, joint_attention_dim=12288
    ),
}
MISTRAL_SMALL_31 = dict(  # text_encoder/config.json of FLUX.2-dev: Mistral-Small-3.1-24B
    text_config=dict(
        vocab_size=131072,
        hidden_size=5120,
        intermediate_size=32768,
        num_hidden_layers=40,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        model_type="mistral",
    ),
    vision_config=dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        head_dim=64,
        patch_size=14,
        image_size=1540,
        model_type="pixtral",
    ),
    tie_word_embeddings=False,
)
QWEN3 = {  # klein's text encoders: Qwen3-4B, Qwen3-8B (36 layers each)
    "4B": QWEN3_4B,
    "9B": {
        **QWEN3_4B,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "tie_word_embeddings": False,
    },
}
# the sizes the model cards state, in parameters (what the counts are checked against)
STATED = {
    ("zimage", "transformer"): "6B",  # Z-Image
    ("zimage", "text_encoder"): "4.0B",  # Qwen3-4B
    ("qwenimage", "transformer"): "20B",  # Qwen-Image: "a 20B MMDiT"
    ("qwenimage", "text_encoder"): "8.29B",  # Qwen2.5-VL-7B-Instruct
    ("flux2", "transformer"): "32B",  # FLUX.2 [dev]: "a 32 billion parameter" flow transformer
    ("flux2", "text_encoder"): "24B",  # Mistral-Small-3.1-24B
    ("flux2klein-4B", "transformer"): "4B",  # FLUX.2 [klein] 4B
    ("flux2klein-4B", "text_encoder"): "4.0B",  # Qwen3-4B
    ("flux2klein-9B", "transformer"): "9B",  # FLUX.2 [klein] 9B
    ("flux2klein-9B", "text_encoder"): "8.2B",  # Qwen3-8B
}


def rounds_to(n: int, stated: str) -> bool:
    """Whether ``n`` parameters round to a card's figure at its precision ("4B": 3.5-4.5 B)."""
    digits = stated[:-1]
    half = 0.5 * 10 ** -(len(digits.split(".")[1]) if "." in digits else 0)
    return abs(n / 1e9 - float(digits)) <= half


def networks(family: str) -> dict[str, torch.nn.Module]:
    """The family's transformer and text encoder on the meta device; a causal LM's output head
    tied to its input embedding where its config says so (under init_empty_weights nothing
    ties them until asked, outside it)."""
    nets = _networks(family)
    for net in nets.values():
        if hasattr(net, "tie_weights"):
            net.tie_weights()
    return nets


def _networks(family: str) -> dict[str, torch.nn.Module]:
    from accelerate import init_empty_weights

    with init_empty_weights():
        if family.startswith("flux2"):
            from diffusers import Flux2Transformer2DModel
            from transformers import (
                Mistral3Config,
                Mistral3ForConditionalGeneration,
                Qwen3Config,
                Qwen3ForCausalLM,
            )

            if family == "flux2":
                return {
                    "transformer": Flux2Transformer2DModel(**FLUX2_DEV),
                    "text_encoder": Mistral3ForConditionalGeneration(
                        Mistral3Config(**MISTRAL_SMALL_31)
                    ),
                }
            size = family.split("-")[1]
            return {
                "transformer": Flux2Transformer2DModel(**KLEIN[size], guidance_embeds=False),
                "text_encoder": Qwen3ForCausalLM(Qwen3Config(**QWEN3[size])),
            }
        if family == "zimage":
            from diffusers import ZImageTransformer2DModel
            from transformers import Qwen3Config, Qwen3Model

            return {
                "transformer": ZImageTransformer2DModel(**ZIMAGE),
                "text_encoder": Qwen3Model(Qwen3Config(**QWEN3_4B)),
            }
        from diffusers import QwenImageTransformer2DModel
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        return {
            "transformer": QwenImageTransformer2DModel(**QWENIMAGE),
            "text_encoder": Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**QWEN25_VL_7B)),
        }


def _flux2(n_single: int) -> SimpleNamespace:  # Flux2Backbone.lora_targets for n single blocks
    single = tuple(f"single_transformer_blocks.{i}.attn.to_out" for i in range(n_single))
    return SimpleNamespace(lora_targets=FLUX2_LORA + single, lora_conv_targets=FLUX2_FF)


TARGETS = {
    "zimage": SimpleNamespace(lora_targets=ZIMAGE_LORA, lora_conv_targets=ZIMAGE_FF),
    "qwenimage": SimpleNamespace(lora_targets=QWEN_LORA, lora_conv_targets=QWEN_FF),
    "flux2": _flux2(FLUX2_DEV["num_single_layers"]),
    "flux2klein-4B": _flux2(KLEIN["4B"]["num_single_layers"]),
    "flux2klein-9B": _flux2(KLEIN["9B"]["num_single_layers"]),
}


def lora_params(family: str, cfg: TuneConfig) -> int:
    net = networks(family)["transformer"]
    add_lora(net, lora_config_dict(cfg, TARGETS[family]))
    return sum(p.numel() for n, p in net.named_parameters() if "lora_" in n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/family_sizes.json")
    a = ap.parse_args()
    rows, bad = {}, []
    for family in TARGETS:
        row = {}
        for name, net in networks(family).items():
            n = sum(p.numel() for p in net.parameters())
            stated = STATED[family, name]
            row[f"{name}_params"] = n
            row[f"{name}_stated"] = stated
            if not rounds_to(n, stated):
                bad.append(f"{family} {name}: {n:,} vs stated {stated}")
        n = row["transformer_params"]
        row["full_fp16_delta_GB"] = round(n * 2 / 1e9, 2)
        n_ck = len(TUNE_SCHEDULES["full"].save_at)
        row[f"full_tune_folder_{n_ck}_checkpoints_GB"] = round(n_ck * n * 2 / 1e9, 2)
        for conv in (False, True):
            k = lora_params(family, TuneConfig(method="lora", lora_rank=16, lora_conv=conv))
            row[f"lora_r16{'_conv' if conv else ''}_MB"] = round(k * 4 / 1e6, 2)
        rows[family] = row
        print(family, row)
    Path(a.out).write_text(json.dumps({"bytes_per_MB": 1e6, **rows}, indent=2) + "\n")
    for b in bad:
        print("not the released size:", b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
