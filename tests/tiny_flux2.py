"""Tiny seeded random-weight FLUX.2 pipelines: klein (Qwen3 text encoder; base and
step-distilled, as ``Flux2KleinPipeline``'s ``is_distilled`` tells them apart) and dev (Mistral
Small 3.1 text encoder behind a Pixtral processor, guidance-distilled). The real architectures at
toy sizes, built fully offline: 32 px images, VAE factor 4 (8 x 8 latents of 8 channels), which
the pipelines patchify 2 x 2 into 4 x 4 tokens of 32 channels normalised by the VAE's batch norm.
"""

from __future__ import annotations

import torch

from tiny_flow import _CORPUS, TINY_RES
from tiny_lm_dit import LM_SIZES, QWEN_DIM, build_qwen_tokenizer, wake

VAE_CHANNELS = 8  # the tiny VAE's latent channels (FLUX.2's: 32); 4x that after patchifying
# the hidden states the pipelines stack: klein (9, 18, 27) of Qwen3, dev (10, 20, 30) of Mistral
KLEIN_LAYERS, DEV_LAYERS = 27, 30


def _tiny_flux2_vae(seed: int):
    """AutoencoderKLFlux2 in small (factor 4), its batch-norm statistics drawn away from
    (0, 1) so the tests see the pipelines' normalisation matter."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=VAE_CHANNELS,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=TINY_RES,
    )
    with torch.no_grad():
        vae.bn.running_mean.normal_(0.0, 0.1)
        vae.bn.running_var.uniform_(0.02, 0.08)  # random encoder latents have std ~0.2
    return vae.eval()


def _tiny_flux2_transformer(seed: int, text_dim: int, guidance: bool):
    """Flux2Transformer2DModel in small: 1 double- and 2 single-stream blocks of 2 heads x 16,
    4-axis RoPE 4 x 4 over (time, row, column, text position)."""
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    net = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * VAE_CHANNELS,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_dim,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance,
    )
    return wake(net)


def _scheduler():
    """FLUX.2's scheduler config: dynamic shifting, the mu the pipelines compute per step count."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        time_shift_type="exponential",
    )


def _tiny_qwen3_lm(seed: int, vocab_size: int):
    """Qwen3ForCausalLM (klein's text encoder class) deep enough for the pipeline's layer 27."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=vocab_size,
        num_hidden_layers=KLEIN_LAYERS,
        tie_word_embeddings=True,
        **LM_SIZES,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return Qwen3ForCausalLM(cfg).eval()


def build_tiny_flux2_klein_pipeline(seed: int = 0, distilled: bool = False):
    """FLUX.2 [klein] in small: base (CFG, 50 steps) or ``distilled`` (no CFG, 4 steps)."""
    from diffusers import Flux2KleinPipeline

    tok = build_qwen_tokenizer()
    return Flux2KleinPipeline(
        scheduler=_scheduler(),
        vae=_tiny_flux2_vae(seed + 1),
        text_encoder=_tiny_qwen3_lm(seed + 2, len(tok)),
        tokenizer=tok,
        transformer=_tiny_flux2_transformer(seed, 3 * QWEN_DIM, guidance=False),
        is_distilled=distilled,
    )


# Mistral Small 3.1's layout of a system turn and a user turn, for content given as a list of
# typed parts (how Flux2Pipeline's format_input writes them)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{% else %}[INST]{% endif %}"
    "{% for c in m['content'] %}{{ c['text'] }}{% endfor %}"
    "{% if m['role'] == 'system' %}[/SYSTEM_PROMPT]{% else %}[/INST]{% endif %}"
    "{% endfor %}"
)
MISTRAL_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]"]
MISTRAL_SPECIAL += ["[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]


def build_mistral_tokenizer():
    """A byte-level BPE of 600 pieces with Mistral's control tokens and chat layout. The real
    [dev] ships a PixtralProcessor, which needs torchvision to build; for text-only prompts its
    ``apply_chat_template`` renders and tokenizes as its tokenizer's does, so the tiny pipeline
    holds the tokenizer itself (same call in Flux2Pipeline: template, tokenize, pad to 512)."""
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=MISTRAL_SPECIAL,
        show_progress=False,
    )
    tok.train_from_iterator([*_CORPUS.strip().split("\n"), SYSTEM_MESSAGE], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.chat_template = MISTRAL_TEMPLATE
    return fast


def _tiny_mistral3(seed: int, tok):
    """Mistral3ForConditionalGeneration ([dev]'s text encoder class) in small: a Mistral decoder
    of 30 layers (the pipeline stacks 10, 20, 30), width QWEN_DIM, and a one-block Pixtral
    vision tower the text-only prompts never run."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.manual_seed(seed)
    text = dict(
        vocab_size=len(tok),
        num_hidden_layers=DEV_LAYERS,
        **LM_SIZES,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        model_type="mistral",
    )
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        head_dim=8,
        patch_size=4,
        image_size=TINY_RES,
        model_type="pixtral",
    )
    cfg = Mistral3Config(
        text_config=text,
        vision_config=vision,
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        tie_word_embeddings=False,
    )
    return Mistral3ForConditionalGeneration(cfg).eval()


def build_tiny_flux2_dev_pipeline(seed: int = 0):
    """FLUX.2 [dev] in small: guidance-distilled (a guidance embedding), Mistral 3 encoder."""
    from diffusers import Flux2Pipeline

    tok = build_mistral_tokenizer()
    return Flux2Pipeline(
        scheduler=_scheduler(),
        vae=_tiny_flux2_vae(seed + 1),
        text_encoder=_tiny_mistral3(seed + 2, tok),
        tokenizer=tok,
        transformer=_tiny_flux2_transformer(seed, 3 * QWEN_DIM, guidance=True),
    )


__all__ = [
    "build_mistral_tokenizer",
    "build_tiny_flux2_dev_pipeline",
    "build_tiny_flux2_klein_pipeline",
]
