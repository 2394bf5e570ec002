"""Tiny seeded random-weight pipelines of the flow-matching families, Stable Diffusion 3 and
FLUX.1, for tests: the real architectures (MM-DiT transformers, CLIP + T5 text encoders, a VAE
with shift and scale, the flow-matching Euler scheduler) at toy sizes, built fully offline.

Shared sizes, as in conftest's tiny SD models: 32 px native resolution = 8 latent px x VAE
factor 4 (three VAE levels); 16 latent channels as the real SD3 / FLUX VAEs have (FLUX's 2x2
packing then gives 64 transformer channels, its real width too). The T5 tokenizer is a small
Unigram model trained here on the caption text below; the CLIP one is the real vocabulary, rebuilt
offline by ``unitune.clip_vocab``.
"""

from __future__ import annotations

import torch

TINY_RES = 32  # pixels: 8 latent px x VAE factor 4
LATENT_CHANNELS = 16  # as SD3's and FLUX's VAEs (SD 1.x/XL: 4), so code cannot assume 4
T5_DIM = 48  # >= 16 + 24, the two SD3 CLIP widths that SD3 zero-pads up to T5's width
T5_MAX_LENGTH = 512  # FLUX's default max_sequence_length (SD3's: 256); T5 is relative-position

_CORPUS = """
a photo of a cat. a photo of a dog. a photo of a cat wearing sunglasses. a photo of beikkpic.
a photo of a dog wearing a red hat. a pixel art painting of a blue house. pixel art of a tree.
a painting of a tree next to a red house. a watercolor painting of a small boat on a lake.
an oil painting of a mountain at sunset. a black and white photo of an old city street.
a close up photo of a yellow flower in a green garden. a cartoon drawing of a happy robot.
a sketch of a horse running across a field. a photograph of a bowl of fruit on a wooden table.
a portrait of a woman with long brown hair. a portrait of a man with a beard and glasses.
a cute puppy sitting on the grass. a kitten sleeping on a soft pillow near the window.
the quick brown fox jumps over the lazy dog. a bird flying over the ocean at dawn.
a castle on a hill under a cloudy sky. a snowy forest with tall pine trees and a frozen river.
a bright orange car parked in front of a white building. a bicycle leaning against a fence.
a cup of coffee and a book on a desk. a plate of pasta with tomato sauce and fresh basil.
a sandy beach with palm trees and clear water. a rainy night in a neon lit street.
a low poly render of a spaceship. a digital illustration of a dragon breathing fire.
a vintage poster of a train station. a mosaic of colorful tiles. a marble statue in a park.
a toy car on a wooden floor. a teddy bear wearing a scarf. a lighthouse by the stormy sea.
a photo of a cat in the style of van gogh. a photo of a dog as a pixel art sprite.
a purple umbrella in the rain. a pink cake with candles. a golden crown on a velvet cushion.
an astronaut riding a horse on the moon. a bridge over a river among autumn leaves.
a dog and a cat playing together. two cats sleeping. three dogs running along the road.
a red apple, a green pear and a banana. a blue sky with white clouds. a dark ocean wave.
high quality, detailed, sharp focus, studio lighting, soft light, dramatic shadows, 4k, 8k.
a photo of a house, a photo of a tree, a painting of a cat, a painting of a dog, a blue car.
an empty room with a wooden chair and a lamp. a glass vase full of roses on a kitchen table.
children playing football in a sunny park. a busy market with fruits and vegetables.
a medieval knight in shining armor. a wizard holding a glowing staff in a dark cave.
a cozy cabin in the mountains covered in snow. a field of sunflowers under a summer sky.
a macro shot of a ladybug on a leaf. a jellyfish glowing in deep blue water.
an abstract painting with bold shapes and bright colors. a minimalist line drawing of a face.
a sleepy owl on a branch at night. a fluffy white rabbit eating a carrot in the garden.
"""

_T5_VOCAB: list[tuple[str, float]] | None = None  # trained once per process


def build_t5_tokenizer(model_max_length: int = T5_MAX_LENGTH):
    """A ``T5TokenizerFast`` of 343 pieces: Unigram, Metaspace, ``<pad>`` 0 / ``</s>`` 1 /
    ``<unk>`` 2, ``</s>`` appended (T5TokenizerFast builds that around the trained pieces); no
    ``<extra_id_*>`` sentinels, which only T5's pre-training uses. Rare words such as ``beikkpic``
    split into several pieces, as in the real one. The trained vocabulary is cached; each call
    returns a fresh tokenizer (tests may add tokens to it). 512 positions: FLUX's default."""
    from unitune.embedded.t5_vocab import t5_tokenizer, train_unigram

    global _T5_VOCAB
    if _T5_VOCAB is None:
        _T5_VOCAB = train_unigram(_CORPUS.strip().split("\n"), 512)
    return t5_tokenizer(_T5_VOCAB, model_max_length)


def _tiny_t5(seed: int, vocab_size: int):
    """T5 v1.1's encoder (gated-GELU, untied) in small: 2 layers, 2 heads of 8, width T5_DIM."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=T5_DIM,
            d_kv=8,
            d_ff=2 * T5_DIM,
            num_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def _tiny_clip(seed: int, hidden: int, with_projection: bool):
    """conftest's tiny CLIP text encoder (real 49408 vocab, 77 positions); the projection, if any,
    keeps the width (as SD3's encoders do: 768 -> 768, 1280 -> 1280)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        projection_dim=hidden,
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _tiny_vae(seed: int):
    """conftest's tiny VAE as SD3 / FLUX have it: no quant convs, 16 latent channels, a shift.
    Random encoder latents here have std ~0.35 and mean ~0: scaling 3.0 brings them to ~unit
    variance; the shift is nominal (nonzero, so the ``- shift`` / ``+ shift`` paths count)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=TINY_RES,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=3.0,
        shift_factor=0.05,
    )


def build_tiny_sd3_pipeline(seed: int = 0):
    """Stable Diffusion 3's architecture in small. The SD3 transformer: patch 2 over 8 latent px
    (a 4 x 4 token grid; positions up to 16 x 16, i.e. 128 px), 2 joint blocks of 4 heads x 16 =
    64 wide (caption_projection_dim must equal it): as wide as a token's output (2 x 2 x 16), so
    one image can be learned, which 16 wide could not. Text: two CLIPTextModelWithProjection (16, 24
    wide; their pooled projections concatenate to pooled_projection_dim 40, their penultimate
    states to 40 features, zero-padded to T5's 48 = joint_attention_dim) and T5 (tokenizer_3)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    from unitune.clip_vocab import load_clip_tokenizer

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=TINY_RES // 4,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=T5_DIM,
        caption_projection_dim=64,
        pooled_projection_dim=16 + 24,
        pos_embed_max_size=16,
    )
    vae = _tiny_vae(seed + 1)
    te = _tiny_clip(seed + 2, 16, with_projection=True)
    te2 = _tiny_clip(seed + 3, 24, with_projection=True)
    tok3 = build_t5_tokenizer()
    te3 = _tiny_t5(seed + 4, len(tok3))
    tok = load_clip_tokenizer()
    return StableDiffusion3Pipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=te,
        tokenizer=tok,
        text_encoder_2=te2,
        tokenizer_2=tok,
        text_encoder_3=te3,
        tokenizer_3=tok3,
    )


def build_tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = True):
    """FLUX.1's architecture in small: ``guidance_embeds`` True is FLUX.1-dev (distilled guidance
    as an input), False is schnell. Latents are packed 2 x 2 (in_channels 4 x 16 = 64, patch 1);
    1 double + 1 single block of 4 heads x 16 = 64 wide, a token's width (RoPE axes 4 + 6 + 6).
    Text: CLIPTextModel (16 wide, its pooled output -> pooled_projection_dim) and T5
    (tokenizer_2, joint_attention_dim). The pipeline's default size is hard-coded 128 x 4 = 512
    px: pass height=width=32."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from unitune.clip_vocab import load_clip_tokenizer

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=T5_DIM,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )
    vae = _tiny_vae(seed + 1)
    te = _tiny_clip(seed + 2, 16, with_projection=False)
    tok2 = build_t5_tokenizer()
    te2 = _tiny_t5(seed + 3, len(tok2))
    # FLUX.1's scheduler config: the shift grows with the image's token count
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text_encoder=te,
        tokenizer=load_clip_tokenizer(),
        text_encoder_2=te2,
        tokenizer_2=tok2,
    )
