"""Guidance math on hand-built tensors (no model)."""

import pytest
import torch

from unitune.guidance import (
    blend_known,
    cfg,
    latent_mask,
    match_norm,
    multi_guidance,
    prompt_guidance,
    sine_active,
    sine_mix,
)


def t(*vals):
    return torch.tensor(vals, dtype=torch.float32).view(1, len(vals), 1, 1)


def test_cfg_values_and_ends():
    u, c = t(1.0, 2.0), t(3.0, -2.0)
    assert torch.equal(cfg(u, c, 0.0), u)
    assert torch.equal(cfg(u, c, 1.0), c)
    assert torch.allclose(cfg(u, c, 32.0), t(1 + 32 * 2, 2 + 32 * -4))


def test_prompt_guidance_is_cfg_against_base():
    base, edit = t(0.5), t(1.5)
    assert torch.allclose(prompt_guidance(base, edit, 7.5), t(0.5 + 7.5))


def test_sine_mix_formula_and_ends():
    u, pre, ft = t(1.0), t(2.0), t(5.0)
    w, v = 7.5, 0.7
    expected = 1.0 + w * (v * 2.0 + (1 - v) * 5.0 - 1.0)
    assert torch.allclose(sine_mix(u, pre, ft, w, v), t(expected))
    # v = 1: plain CFG on the pretrained model
    assert torch.allclose(sine_mix(u, pre, ft, w, 1.0), cfg(u, pre, w))
    # v = 0: fine-tuned conditional guided against the pretrained unconditional
    assert torch.allclose(sine_mix(u, pre, ft, w, 0.0), cfg(u, ft, w))


def test_sine_switch_at_K():
    assert sine_active(401, 400) and not sine_active(400, 400)
    assert sine_active(torch.tensor(999), 400) and not sine_active(torch.tensor(1), 400)


def test_multi_guidance_sums_deltas():
    u = t(1.0)
    out = multi_guidance(u, [t(2.0), t(0.0)], [3.0, 2.0])
    assert torch.allclose(out, t(1.0 + 3.0 * 1.0 + 2.0 * -1.0))
    with pytest.raises(ValueError):
        multi_guidance(u, [t(2.0)], [1.0, 2.0])


def test_blend_known_keeps_outside_mask():
    x, known = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    out = blend_known(x, known, m)
    assert torch.equal(out[:, :, 0, 0], x[:, :, 0, 0]) and torch.equal(
        out[:, :, 0, 1], known[:, :, 0, 1]
    )


def test_latent_mask_dilates_by_one_cell():
    m = torch.zeros(1, 1, 32, 32)
    m[..., 12:14, 12:14] = 1.0  # a 2x2 pixel spot lies in latent cell (3, 3) at factor 4
    lm = latent_mask(m, (8, 8))
    assert lm.shape == (1, 1, 8, 8)
    assert lm[0, 0, 3, 3] == 1 and lm[0, 0, 2, 2] == 1 and lm[0, 0, 4, 4] == 1
    assert lm.sum() == 9


def test_sine_mix_is_multi_guidance_over_both_models():
    u, pre, ft = (torch.randn(1, 4, 2, 2) for _ in range(3))
    w, v = 7.5, 0.7
    ref = multi_guidance(u, [pre, ft], [w * v, w * (1 - v)])
    assert torch.allclose(sine_mix(u, pre, ft, w, v), ref, atol=1e-5)


def test_match_norm_keeps_each_tokens_norm_and_direction():
    """Qwen-Image's renormalisation: per 2x2 patch (all channels, one transformer token) the mix
    gets the positive prediction's norm and keeps its own direction; patch 0 is a no-op; the
    result equals the pipeline's formula on packed tokens."""
    from unitune.backbones.flux import pack, unpack

    g = torch.Generator().manual_seed(0)
    mixed, pos = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 4, 6, 8, generator=g)
    out = match_norm(mixed, pos, 2)
    t_out, t_pos, t_mix = pack(out), pack(pos), pack(mixed)
    assert torch.allclose(t_out.norm(dim=-1), t_pos.norm(dim=-1), atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(t_out, t_mix, dim=-1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)
    ref = t_mix * (t_pos.norm(dim=-1, keepdim=True) / t_mix.norm(dim=-1, keepdim=True))
    assert torch.allclose(out, unpack(ref, 6, 8), atol=1e-6)
    assert match_norm(mixed, pos, 0) is mixed
    assert not torch.allclose(out, mixed)
