"""The original (CompVis / Stability, "A1111") single-file key layout of the Stable Diffusion
family, from diffusers' module names: the inverse of what diffusers' ``from_single_file`` reads.

The maps are built from the networks' own configs (levels, layers per block, which levels have
attention), not from tables for one size, so any UNet2DConditionModel / AutoencoderKL of the
family converts (the tests' tiny models as well as SD 1.5 and SDXL).

UNet (``model.diffusion_model.``): ``input_blocks.0`` is conv_in; level i's resnet j and its
attention are ``input_blocks.{1 + i (L+1) + j}.0 / .1`` (L = layers per block) and its
downsampler ``input_blocks.{(i+1)(L+1)}.0.op``; up level i's resnet j (L+1 of them) is
``output_blocks.{i (L+1) + j}.0``, its attention ``.1``, its upsampler the next index of the last
one; the middle block is resnet / attention / resnet = ``middle_block.0/1/2``. Resnets rename
norm1/conv1/norm2/conv2/time_emb_proj/conv_shortcut to in_layers.0/in_layers.2/out_layers.0/
out_layers.3/emb_layers.1/skip_connection.

VAE (``first_stage_model.``): ``encoder.down.{i}.block.{j}``, ``decoder.up.{n-1-i}.block.{j}``
(the decoder's levels are numbered from the bottom), ``mid.block_1/attn_1/block_2``, the mid
attention's q/k/v/proj_out as 1x1 convs.

Text encoders: CLIP as Hugging Face names it under a prefix; SDXL's second (OpenCLIP) encoder in
OpenCLIP's own names (fused in_proj, transposed text_projection).
"""

from __future__ import annotations

from torch import Tensor

RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


def _rename(
    state: dict[str, Tensor], prefixes: list[tuple[str, str]], inner=()
) -> dict[str, Tensor]:
    """Rename keys by the first matching (diffusers prefix, original prefix); inside a renamed
    prefix, ``inner`` (diffusers part, original part) pairs rename sub-modules."""
    out = {}
    for key, value in state.items():
        new = key
        for src, dst in prefixes:
            if key.startswith(src):
                rest = key[len(src) :]
                for a, b in inner if src.endswith(".") else ():
                    if rest.startswith(a + "."):
                        rest = b + rest[len(a) :]
                new = dst + rest
                break
        out[new] = value
    return out


def unet_to_ldm(state: dict[str, Tensor], config) -> dict[str, Tensor]:
    levels = len(config.block_out_channels)
    lpb = config.layers_per_block
    if not isinstance(lpb, int):
        raise ValueError("a UNet with a different number of layers per level has no single layout")
    prefixes = [(f"{k}.", f"{v}.") for k, v in UNET_TOP.items()]
    resnet_prefixes = []
    for i in range(levels):
        for j in range(lpb):
            idx = 1 + i * (lpb + 1) + j
            resnet_prefixes.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{idx}.0."))
            prefixes.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{idx}.1."))
        if i < levels - 1:
            prefixes.append(
                (
                    f"down_blocks.{i}.downsamplers.0.conv.",
                    f"input_blocks.{(i + 1) * (lpb + 1)}.0.op.",
                )
            )
        attn = "CrossAttn" in config.up_block_types[i]
        for j in range(lpb + 1):
            idx = i * (lpb + 1) + j
            resnet_prefixes.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{idx}.0."))
            prefixes.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{idx}.1."))
        if i < levels - 1:
            last = i * (lpb + 1) + lpb
            prefixes.append(
                (f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{last}.{2 if attn else 1}.")
            )
    resnet_prefixes += [
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    prefixes.append(("mid_block.attentions.0.", "middle_block.1."))
    starts = tuple(src for src, _ in resnet_prefixes)
    resnets = {k: v for k, v in state.items() if k.startswith(starts)}
    others = {k: v for k, v in state.items() if not k.startswith(starts)}
    return {**_rename(resnets, resnet_prefixes, RESNET), **_rename(others, prefixes)}


VAE_RESNET = (("conv_shortcut", "nin_shortcut"),)
VAE_ATTN = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)


def vae_to_ldm(state: dict[str, Tensor], config) -> dict[str, Tensor]:
    n = len(config.block_out_channels)
    lpb = config.layers_per_block
    prefixes = []
    for part in ("encoder", "decoder"):
        prefixes += [
            (f"{part}.conv_norm_out.", f"{part}.norm_out."),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."),
        ]
    for i in range(n):
        for j in range(lpb):
            prefixes.append(
                (f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.")
            )
        for j in range(lpb + 1):
            prefixes.append(
                (f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{n - 1 - i}.block.{j}.")
            )
        if i < n - 1:
            prefixes.append(
                (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            )
            prefixes.append(
                (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")
            )
    out = _rename(state, prefixes, VAE_RESNET)
    attn = []
    for part in ("encoder", "decoder"):
        attn.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
    out = _rename(out, attn, VAE_ATTN)
    for k, v in out.items():  # the mid attention's projections are 1x1 convs in the original
        if ".mid.attn_1." in k and k.endswith(".weight") and v.ndim == 2:
            out[k] = v[:, :, None, None]
    return out


def _hf_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A CLIP text model's keys as ``text_model.*`` (recent transformers drop that level from
    CLIPTextModel) and without the position_ids buffer."""
    return {
        (
            k
            if k.startswith("text_model.") or k.startswith("text_projection")
            else "text_model." + k
        ): v
        for k, v in state.items()
        if not k.endswith("position_ids")
    }


def clip_to_ldm(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """A Hugging Face CLIP text model's weights under ``prefix``, as ``text_model.*``."""
    return {prefix + k: v for k, v in _hf_names(state).items()}


OPEN_CLIP = (
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)


def open_clip_to_ldm(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """A CLIPTextModelWithProjection's weights in OpenCLIP's names under ``prefix``."""
    state = _hf_names(state)
    out = {}
    for k, v in state.items():
        if k == "text_projection.weight":
            out[prefix + "text_projection"] = v.T.contiguous()
        elif k.endswith("embeddings.token_embedding.weight"):
            out[prefix + "token_embedding.weight"] = v
        elif k.endswith("embeddings.position_embedding.weight"):
            out[prefix + "positional_embedding"] = v
        elif k.startswith("text_model.final_layer_norm."):
            out[prefix + "ln_final." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("text_model.encoder.layers."):
            i, rest = k[len("text_model.encoder.layers.") :].split(".", 1)
            base = f"{prefix}transformer.resblocks.{i}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in (
                "q_proj",
                "k_proj",
                "v_proj",
            ):
                continue  # fused below
            for a, b in OPEN_CLIP:
                if rest.startswith(a + "."):
                    rest = b + rest[len(a) :]
            out[base + rest] = v
    layers = {k.split(".")[3] for k in state if k.startswith("text_model.encoder.layers.")}
    for i in sorted(layers, key=int):
        src = f"text_model.encoder.layers.{i}.self_attn."
        for kind in ("weight", "bias"):
            qkv = [state[f"{src}{p}_proj.{kind}"] for p in ("q", "k", "v")]
            out[f"{prefix}transformer.resblocks.{i}.attn.in_proj_{kind}"] = _cat(qkv)
    return out


def _cat(parts: list[Tensor]) -> Tensor:
    import torch

    return torch.cat(parts, dim=0)
