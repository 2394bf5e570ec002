"""Tiny seeded random-weight pipelines of the families whose text encoder is a decoder language
model read through a chat template: Z-Image (Qwen3) and Qwen-Image (Qwen2.5-VL). The real
architectures at toy sizes, built fully offline; sizes as in tiny_flow.py (32 px = 8 latent px
x VAE factor 4, 16 latent channels; Z-Image: the same tiny VAE with shift and scale, Qwen-Image:
its own causal 3-D VAE).

No Qwen tokenizer ships in any package, so ``build_qwen_tokenizer`` trains a byte-level BPE on
tiny_flow's caption corpus and wraps it as transformers' ``Qwen2Tokenizer`` (the class the real
models name), with the chat markers as special tokens and a chat template of the Qwen layout
(``<|im_start|>user ... <|im_end|>`` then the assistant turn), so the pipelines' own
``encode_prompt`` runs its real code path.
"""

from __future__ import annotations

import json

import torch

from tiny_flow import _CORPUS, LATENT_CHANNELS, TINY_RES, _tiny_vae

QWEN_DIM = 32  # the tiny text encoder's width (= the transformer's cap_feat_dim)
# the Qwen layout of one user turn and the assistant's opening; Qwen3's own template adds
# nothing more when thinking is enabled, which is how ZImagePipeline asks for it
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    # thinking off (FLUX.2 klein asks so): Qwen3's template opens an empty think block
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
_BPE: tuple[dict, list] | None = None  # (vocab, merges), trained once per process
# the tiny decoder LMs' shape (Qwen3, Qwen2.5-VL's text half, Mistral): width QWEN_DIM, 2 heads
# x 16 over one key-value head (grouped-query attention, as the real ones)
LM_SIZES = dict(
    hidden_size=QWEN_DIM,
    intermediate_size=2 * QWEN_DIM,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=1024,
)


def wake(net: torch.nn.Module, skip: str | None = None) -> torch.nn.Module:
    """The DiTs' random init leaves the final layer and the modulations at zero (a constant
    output): those get small random values instead, so the tests see a model whose prediction
    depends on its input; parameters named with ``skip`` stay as they are."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.abs().max() == 0 and (skip is None or skip not in name):
                p.normal_(0.0, 0.02)
    return net


def build_qwen_tokenizer():
    """A ``Qwen2Tokenizer`` of 600 byte-level BPE pieces + ``<|im_start|>`` / ``<|im_end|>``;
    ``<|endoftext|>`` pads, as in Qwen's. Rare words such as ``beikkpic`` split into pieces."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer

    global _BPE
    if _BPE is None:
        tok = Tokenizer(BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=600,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=["<|endoftext|>"],
            show_progress=False,
        )
        tok.train_from_iterator(_CORPUS.strip().split("\n"), trainer)
        model = json.loads(tok.to_str())["model"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
        _BPE = (model["vocab"], merges)
    vocab, merges = _BPE
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _tiny_qwen3(seed: int, vocab_size: int):
    """Qwen3's decoder (grouped-query attention with q/k norms, SwiGLU) in small: 2 layers of 2
    heads x 16, one key-value head, width QWEN_DIM."""
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    return Qwen3Model(
        Qwen3Config(
            vocab_size=vocab_size, num_hidden_layers=2, tie_word_embeddings=False, **LM_SIZES
        )
    )


def build_tiny_zimage_pipeline(seed: int = 0):
    """Z-Image's architecture in small: the single-stream DiT (2 x 2 patches of 16 channels,
    1 noise-refiner + 1 context-refiner block, 2 main blocks of 4 heads x 16 = 64 wide, 3-axis
    RoPE 4 + 6 + 6 over (caption position, row, column)), a Qwen3 text encoder read at its
    penultimate hidden states, and Z-Image-Turbo's scheduler config (static shift 3)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

    tok = build_qwen_tokenizer()
    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=LATENT_CHANNELS,
        dim=64,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=4,
        n_kv_heads=4,
        cap_feat_dim=QWEN_DIM,
        axes_dims=[4, 6, 6],
        axes_lens=[1024, 64, 64],
    )
    return ZImagePipeline(
        transformer=wake(transformer, skip="pad_token"),
        vae=_tiny_vae(seed + 1),
        text_encoder=_tiny_qwen3(seed + 2, len(tok)),
        tokenizer=tok,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
    )


def _tiny_qwen25_vl(seed: int, vocab_size: int):
    """Qwen2.5-VL (the class QwenImagePipeline names) in small: the language model as
    ``_tiny_qwen3`` sizes it (2 layers, 2 heads x 16, one key-value head, M-RoPE sections summing
    to half a head) and a one-block vision tower the text-only prompts never run."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    text = dict(
        vocab_size=vocab_size,
        hidden_size=QWEN_DIM,
        intermediate_size=2 * QWEN_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        tie_word_embeddings=False,
        bos_token_id=0,  # the tiny tokenizer's <|endoftext|> (Qwen's ids are past its vocabulary)
        eos_token_id=0,
    )
    vision = dict(
        depth=1,
        hidden_size=16,
        intermediate_size=32,
        num_heads=2,
        out_hidden_size=QWEN_DIM,
        fullatt_block_indexes=[0],
    )
    cfg = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def _tiny_qwen_vae(seed: int):
    """AutoencoderKLQwenImage (Wan's causal 3-D VAE, one frame per image) in small: base width 8,
    two downsamplings (factor 4, as tiny_flow's VAE), 16 latent channels with per-channel
    mean / std as the released config has (here the released values themselves)."""
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, False],
    )


def build_tiny_qwenimage_pipeline(seed: int = 0):
    """Qwen-Image's architecture in small: the dual-stream MMDiT (2 x 2 patches of 16 channels
    as 64-wide tokens, 2 blocks of 4 heads x 16, 3-axis RoPE 4 + 6 + 6, text width QWEN_DIM),
    Qwen2.5-VL read at its last hidden states after the pipeline's system prompt, the causal 3-D
    VAE, and the released scheduler config's dynamic shift (exponential, 0.5 .. 0.9)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    tok = build_qwen_tokenizer()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=QWEN_DIM,
        axes_dims_rope=(4, 6, 6),
    )
    wake(transformer)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        time_shift_type="exponential",
    )
    return QwenImagePipeline(
        transformer=transformer,
        vae=_tiny_qwen_vae(seed + 1),
        text_encoder=_tiny_qwen25_vl(seed + 2, len(tok)),
        tokenizer=tok,
        scheduler=scheduler,
    )


__all__ = [
    "TINY_RES",
    "build_qwen_tokenizer",
    "build_tiny_qwenimage_pipeline",
    "build_tiny_zimage_pipeline",
]
