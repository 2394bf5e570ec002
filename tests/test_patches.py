"""SINE patch sampling and the positional embedding (no diffusion model needed)."""

import torch
from torch import nn

from unitune import patches


def test_sample_box_bounds_and_sizes():
    g = torch.Generator().manual_seed(0)
    hs, ws = [], []
    for _ in range(500):
        h1, w1, h2, w2 = patches.sample_box(g, 300, 451)
        assert 0 <= h1 < h2 <= 300 and 0 <= w1 < w2 <= 451
        hs.append(h2 - h1)
        ws.append(w2 - w1)
    assert min(hs) >= 30 and max(hs) <= 300 and min(ws) >= 45
    assert max(hs) > 270 and min(hs) < 60  # spans [0.1 H, H]


def test_coord_map_whole_and_sub_box():
    full = patches.coord_map(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), 4, 8)
    assert full.shape == (1, 2, 4, 8)
    assert torch.allclose(full[0, 0, :, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.allclose(full[0, 1, 0, :2], torch.tensor([1 / 16, 3 / 16]))
    right_half = patches.coord_map(torch.tensor([[0.0, 0.5, 1.0, 1.0]]), 4, 4)
    assert right_half[0, 1].min() > 0.5  # every cell lies in the right half of the image


def test_fourier_shape_and_range():
    emb = patches.fourier(torch.rand(2, 2, 3, 5), 6)
    assert emb.shape == (2, 24, 3, 5) and emb.abs().max() <= 1.0


def test_positional_conv_in_zero_init_then_box_dependent():
    conv = nn.Conv2d(4, 8, 3, padding=1)
    mod = patches.PositionalConvIn(conv, n_freq=3)
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(mod(x), conv(x))  # zero init: the pretrained model is unchanged
    nn.init.normal_(mod.pos_proj.weight)
    mod.box = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    y = mod(x)
    mod.box = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    assert not torch.allclose(y, mod(x))
    mod.box = None  # whole image over any grid, including a non-square one
    assert mod(torch.randn(1, 4, 6, 9)).shape == (1, 8, 6, 9)
    mod.enabled = False
    assert torch.equal(mod(x), conv(x))
    mod.enabled = True
    mod.box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert mod(torch.cat([x, x])).shape == (4, 8, 6, 6)  # CFG-doubled batch reuses the boxes


def test_flat_token_rows_get_the_same_embedding_as_batched_tokens():
    """A token embedder that sees the batch as one list (B * n, D), each row's h * w tokens
    first and padding after (Z-Image), inside a container (a dotted site): the real tokens get
    exactly what (B, h * w, D) tokens get, the padding nothing."""
    torch.manual_seed(0)
    net = nn.Module()
    net.emb = nn.ModuleDict({"2-1": nn.Linear(8, 6)})
    pos = patches.install(net, 3, "emb.2-1")
    assert patches.get(net, "emb.2-1") is pos and isinstance(net.emb["2-1"], type(pos))
    nn.init.normal_(pos.pos_proj.weight)
    pos.box = torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]])
    h, w, n = 2, 3, 8  # 6 real tokens a row, padded to 8
    x = torch.randn(2, n, 8)
    patches.set_grid(net, "emb.2-1", (h, w), row_tokens=n)
    flat = net.emb["2-1"](x.reshape(2 * n, 8)).view(2, n, 6)
    patches.set_grid(net, "emb.2-1", (h, w))
    batched = net.emb["2-1"](x[:, : h * w])
    assert torch.allclose(flat[:, : h * w], batched, atol=1e-6)
    assert torch.equal(flat[:, h * w :], pos.conv(x[:, h * w :]))  # padding: the plain layer
    assert not torch.allclose(batched, pos.conv(x[:, : h * w]))  # the embedding did something
    patches.uninstall(net, "emb.2-1")
    assert isinstance(net.emb["2-1"], nn.Linear)
