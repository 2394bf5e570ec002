"""SINE patch-based fine-tuning (§3.3): random crops + a positional embedding of the crop box.

The embedding is added to the output of the network's input layer, which the backbone names
(``Backbone.patch_site``: ``conv_in`` for the UNets, the patch embedder for the transformers,
whose output is a token sequence (B, h * w, D) over an h x w grid, row-major, or, for a
transformer that embeds the batch's tokens as one list (Z-Image), (B * n, D) with each row's
h * w tokens first and padding after; a dotted site names a layer inside a container).

Each training step crops a box v = [h1, w1, h2, w2] of the full-resolution image (height and
width uniform in [0.1 H, H] x [0.1 W, W]), resizes it to the training resolution, and tells the
UNet where the patch came from. The box is normalised to [0, 1] by the image size and turned into
a per-latent-pixel coordinate map (the normalised image coordinates of each latent cell's
centre), Fourier-embedded, projected by a zero-initialised 1x1 conv and ADDED to the features
after the UNet's input convolution. Zero init means the untrained module leaves the pretrained
model unchanged. At sampling time the box is the whole image [0, 0, 1, 1] spread over whatever
latent grid is sampled, so a 64x96 latent still "knows" it covers the image once, left to right.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torch import Tensor, nn

FULL_BOX = (0.0, 0.0, 1.0, 1.0)


def sample_box(gen: torch.Generator, h: int, w: int, min_frac: float = 0.1) -> tuple[int, ...]:
    """A crop box (h1, w1, h2, w2) in pixels with size uniform in [min_frac*H, H] x [..W]."""
    u = torch.rand(4, generator=gen).tolist()
    ch = max(1, round(h * (min_frac + (1 - min_frac) * u[0])))
    cw = max(1, round(w * (min_frac + (1 - min_frac) * u[1])))
    h1 = min(int(u[2] * (h - ch + 1)), h - ch)
    w1 = min(int(u[3] * (w - cw + 1)), w - cw)
    return h1, w1, h1 + ch, w1 + cw


def crop_patch(img: Image.Image, box: tuple[int, ...], res: tuple[int, int]) -> Image.Image:
    """Crop box (h1, w1, h2, w2) of img and resize to res (H, W): aspect is NOT kept, as in SINE."""
    h1, w1, h2, w2 = box
    return img.crop((w1, h1, w2, h2)).resize((res[1], res[0]), Image.LANCZOS)


def normalize_box(box: tuple[int, ...], h: int, w: int) -> tuple[float, ...]:
    h1, w1, h2, w2 = box
    return h1 / h, w1 / w, h2 / h, w2 / w


def coord_map(boxes: Tensor, h: int, w: int) -> Tensor:
    """boxes (B, 4) normalised [h1, w1, h2, w2] -> (B, 2, h, w) image coordinates in [0, 1] of
    each latent cell's centre."""
    iy = (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) / h  # (h,)
    ix = (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) / w  # (w,)
    y = boxes[:, 0, None] + iy[None] * (boxes[:, 2, None] - boxes[:, 0, None])  # (B, h)
    x = boxes[:, 1, None] + ix[None] * (boxes[:, 3, None] - boxes[:, 1, None])  # (B, w)
    return torch.stack(
        [y[:, :, None].expand(-1, h, w), x[:, None, :].expand(-1, h, w)], dim=1
    )  # (B, 2, h, w)


def fourier(coords: Tensor, n_freq: int) -> Tensor:
    """(B, 2, h, w) in [0, 1] -> (B, 4 n_freq, h, w): sin/cos at frequencies 2^k pi, k < n_freq."""
    freqs = (2.0 ** torch.arange(n_freq, device=coords.device, dtype=coords.dtype)) * math.pi
    ang = coords[:, :, None] * freqs[None, None, :, None, None]  # (B, 2, F, h, w)
    emb = torch.cat([ang.sin(), ang.cos()], dim=2)  # (B, 2, 2F, h, w)
    return emb.flatten(1, 2)


def _width(layer: nn.Module) -> int:
    """Output features of an input layer: a conv, a linear token embedder or a PatchEmbed."""
    for m in (layer, getattr(layer, "proj", None)):
        if isinstance(m, nn.Conv2d):
            return m.out_channels
        if isinstance(m, nn.Linear):
            return m.out_features
    raise TypeError(f"cannot tell the output width of {type(layer).__name__}")


def _param(layer: nn.Module) -> Tensor:
    return next(layer.parameters())


class PositionalConvIn(nn.Module):
    """Wraps the network's input layer: layer(x) + proj(fourier(coords(box))). Set ``box``
    (B, 4) before a forward pass; None = the whole image. ``enabled = False`` gives the
    pretrained behaviour (used when one network serves as both models in SINE guidance). Token
    outputs (B, N, D) need their grid: ``grid`` (h, w), or read from a spatial input
    (B, C, H, W)."""

    def __init__(self, conv: nn.Module, n_freq: int) -> None:
        super().__init__()
        self.conv = conv  # the wrapped layer (named for the UNets' conv_in; checkpoints use it)
        self.n_freq = n_freq
        self.pos_proj = nn.Conv2d(4 * n_freq, _width(conv), kernel_size=1)
        nn.init.zeros_(self.pos_proj.weight)
        nn.init.zeros_(self.pos_proj.bias)
        self.box: Tensor | None = None
        self.grid: tuple[int, int] | None = None  # token grid of the next call (packed inputs)
        self.row_tokens: int | None = None  # flat (B * n, D) inputs: n tokens per row (padded)
        self.enabled = True

    def _grid(self, x: Tensor, n: int) -> tuple[int, int]:
        if x.ndim == 4:  # patches of a latent image: the grid is its size over the patch side
            side = round((x.shape[2] * x.shape[3] / n) ** 0.5)
            return x.shape[2] // side, x.shape[3] // side
        if self.grid is None or self.grid[0] * self.grid[1] != n:
            raise RuntimeError(f"{n} tokens but the token grid is {self.grid}: set_grid first")
        return self.grid

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if not self.enabled:
            return y
        if y.ndim == 2:  # (B * n, D): the batch's rows one after another, h * w tokens first
            n = self.row_tokens or y.shape[0]
            rows = y.view(y.shape[0] // n, n, y.shape[1])
            h, w = self.grid or (n + 1, 1)
            if h * w > n:
                raise RuntimeError(f"{n} tokens a row but the token grid is {self.grid}")
            real = self.forward_tokens(rows[:, : h * w])
            return torch.cat([real, rows[:, h * w :]], dim=1).view_as(y)
        return self.forward_tokens(y, x)

    def forward_tokens(self, y: Tensor, x: Tensor | None = None) -> Tensor:
        """The embedding added to the input layer's output y: (B, N, D) tokens (their grid
        from ``grid``, or from a spatial input x) or (B, D, h, w) features."""
        tokens = y.ndim == 3
        b = y.shape[0]
        h, w = (self.grid if x is None else self._grid(x, y.shape[1])) if tokens else y.shape[2:]
        box = self.box
        if box is None:
            box = torch.tensor([FULL_BOX], device=y.device, dtype=torch.float32)
        box = box.to(y.device, torch.float32)
        if box.shape[0] != b:  # CFG doubles the batch: the same boxes for each half
            box = box.repeat(b // box.shape[0], 1)
        emb = fourier(coord_map(box, h, w), self.n_freq).to(self.pos_proj.weight.dtype)
        pos = self.pos_proj(emb).to(y.dtype)  # (B, D, h, w)
        return y + (pos.flatten(2).transpose(1, 2) if tokens else pos)


def _parent(module: nn.Module, site: str) -> tuple[nn.Module, str]:
    """(the module holding the input layer, its name there): ``a.b`` is b inside a."""
    parent, _, name = site.rpartition(".")
    return (module.get_submodule(parent) if parent else module), name


def _layer(module: nn.Module, site: str) -> nn.Module:
    holder, name = _parent(module, site)
    return getattr(holder, name)


def install(module: nn.Module, n_freq: int, site: str) -> PositionalConvIn:
    """Wrap the network's input layer ``site`` (the backbone's ``patch_site``) in the positional
    module (idempotent; zero-initialised, so the network is unchanged until trained)."""
    layer = _layer(module, site)
    if isinstance(layer, PositionalConvIn):
        return layer
    wrapped = PositionalConvIn(layer, n_freq).to(_param(layer).device, _param(layer).dtype)
    setattr(*_parent(module, site), wrapped)
    return wrapped


def get(module: nn.Module, site: str) -> PositionalConvIn | None:
    layer = _layer(module, site)
    return layer if isinstance(layer, PositionalConvIn) else None


def set_grid(
    module: nn.Module, site: str, grid: tuple[int, int], row_tokens: int | None = None
) -> None:
    """Tell the positional module (if any) the token grid of the next forward pass, and for
    flat (B * n, D) inputs the tokens n of each row."""
    mod = get(module, site)
    if mod is not None:
        mod.grid, mod.row_tokens = grid, row_tokens


def uninstall(module: nn.Module, site: str) -> None:
    """Put the plain input layer back (its weights are the wrapped layer's)."""
    mod = get(module, site)
    if mod is not None:
        setattr(*_parent(module, site), mod.conv)


def plain_name(name: str, site: str) -> str:
    """A parameter name with the wrapper seen through: ``conv_in.conv.weight`` ->
    ``conv_in.weight``."""
    prefix = f"{site}.conv."
    return f"{site}." + name[len(prefix) :] if name.startswith(prefix) else name


def select(module: nn.Module, site: str, pos: tuple[nn.Module, int] | None) -> None:
    """Set the positional module for one forward pass: ``pos`` = (projection, n_freq), or None
    for the pretrained input layer (the module switched off, or absent)."""
    mod = get(module, site)
    if pos is None:
        if mod is not None:
            mod.enabled = False
        return
    if mod is None:
        mod = install(module, pos[1], site)
    mod.pos_proj, mod.n_freq = pos
    mod.enabled = True


def state(module: nn.Module, site: str) -> dict[str, Tensor]:
    """The positional module's weights, prefixed ``pos.`` for checkpoints."""
    mod = get(module, site)
    if mod is None:
        return {}
    return {f"pos.{k}": v.detach().float().cpu() for k, v in mod.pos_proj.state_dict().items()}


def _pos_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k[4:]: v for k, v in tensors.items() if k.startswith("pos.")}


@torch.no_grad()
def load_state(module: nn.Module, tensors: dict[str, Tensor], n_freq: int, site: str) -> None:
    pos = _pos_tensors(tensors)
    if not pos:
        return
    mod = install(module, n_freq, site)
    mod.pos_proj.load_state_dict({k: v.to(mod.pos_proj.weight.device) for k, v in pos.items()})


@torch.no_grad()
def projection(module: nn.Module, site: str, tensors: dict[str, Tensor], n_freq: int) -> nn.Module:
    """A checkpoint's positional projection as a standalone module, on the network's device
    (for a view that shares the network with others)."""
    mod = get(module, site)
    layer = mod.conv if mod is not None else _layer(module, site)
    proj = nn.Conv2d(4 * n_freq, _width(layer), kernel_size=1)
    proj.load_state_dict(_pos_tensors(tensors))
    return proj.to(_param(layer).device, _param(layer).dtype).requires_grad_(False).eval()
