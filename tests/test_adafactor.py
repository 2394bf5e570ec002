"""unitune.adafactor against transformers' Adafactor, the optimizer it replaces in `tune`."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.optimization import Adafactor as HFAdafactor

from unitune.adafactor import Adafactor


def _net(dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    # every rank the UNet has: 4-d convolutions, 2-d projections, 1-d biases and norms
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.GroupNorm(2, 8),
        torch.nn.SiLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 16),
        torch.nn.LayerNorm(16),
        torch.nn.Linear(16, 5),
    )
    return net.to(dtype)


def _hf(params, lr):
    return HFAdafactor(params, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)


def _train(net, opt, steps, start=0):
    for i in range(start, steps):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, 3, 8, 8, generator=g, dtype=next(net.parameters()).dtype)
        # growing inputs so some updates exceed the clip threshold and some do not
        (net(x * (1 + i)).float() ** 2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("lr", [1e-2, 1e-4])
@pytest.mark.parametrize("bucket", [1 << 22, 100])  # one bucket; many (and tensors above one)
def test_same_weights_as_transformers_bit_for_bit(lr, bucket, monkeypatch):
    monkeypatch.setattr("unitune.adafactor.BUCKET", bucket)
    a, b = _net(), _net()
    _train(a, _hf(a.parameters(), lr), 25)
    _train(b, Adafactor(b.parameters(), lr=lr), 25)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(a[0].weight, _net()[0].weight)  # it did train


def test_half_precision_parameters_match_transformers():
    a, b = _net(torch.bfloat16), _net(torch.bfloat16)
    _train(a, _hf(a.parameters(), 1e-2), 10)
    _train(b, Adafactor(b.parameters(), lr=1e-2), 10)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert p.dtype == torch.bfloat16 and torch.equal(p, q)


def test_resumes_from_transformers_state():
    """A tune interrupted under transformers' optimizer continues under this one unchanged."""
    a, b = _net(), _net()
    oa = _hf(a.parameters(), 1e-2)
    _train(a, oa, 8)
    b.load_state_dict(a.state_dict())
    ob = Adafactor(b.parameters(), lr=1e-2)
    ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # as from a file: no shared tensors
    _train(a, oa, 16, start=8)
    _train(b, ob, 16, start=8)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_skips_parameters_without_gradients():
    net = _net()
    frozen = net[0].weight.detach().clone()
    net[0].weight.requires_grad_(False)
    _train(net, Adafactor([p for p in net.parameters() if p.requires_grad], lr=1e-2), 3)
    assert torch.equal(net[0].weight, frozen)
