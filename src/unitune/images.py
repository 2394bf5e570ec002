"""Image input: robust loading (EXIF, alpha, odd modes, size limits), fitting to the model's
resolution with a remembered placement (for paste-back), masks, and tensor conversion."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import Limits
from .errors import UserError

if TYPE_CHECKING:  # torch loads lazily: the CLI checks images and masks before importing it
    from torch import Tensor

RESAMPLE = Image.Resampling.LANCZOS


def _open(path: str | Path, what: str = "image") -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} {path} does not exist", "check the path")
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not an image file", "pass a PNG/JPEG file")
    limit = Limits().max_megapixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            w, h = img.size
            if w * h > limit * 1e6:  # checked on the header, before any pixel is decoded
                raise UserError(
                    f"{what} {path} is {w}x{h} = {w * h / 1e6:.0f} megapixels, over the "
                    f"{limit:g} MP limit",
                    "downscale it first (e.g. to 2048 px on the long side)",
                )
            img.load()
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(
            f"{what} {path} is too large to decode safely ({e})", "downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise UserError(
            f"{path} is not an image format unitune can read",
            "pass a PNG, JPEG, WebP, TIFF or BMP file",
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{what} {path} is corrupt or truncated ({e})", "re-export it") from None
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: 16-bit and float greys rescaled, alpha flattened onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        if img.mode == "F" and a.max() <= 1.0:
            top = 1.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(a, "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Load a photo as RGB, upright (EXIF orientation applied)."""
    img = _open(path)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make the photo unusable
        pass
    return to_rgb(img)


def image_sha256(img: Image.Image) -> str:
    """Hash of the decoded RGB pixels and size (not the file bytes: re-saves hash the same)."""
    h = hashlib.sha256(f"{img.width}x{img.height}".encode())
    h.update(np.asarray(img.convert("RGB")).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Geometry:
    """Where the model-sized image came from, for families that condition on it (SDXL's added
    time ids): sizes are (H, W) in pixels, ``crop`` the (top, left) of the crop in the resized
    photo. Families without such conditioning ignore it."""

    original: tuple[int, int]  # the photo's size before fitting
    crop: tuple[int, int]  # top-left of the crop, in the resized photo's pixels
    target: tuple[int, int]  # the size sampled or trained at

    @classmethod
    def plain(cls, hw: tuple[int, int]) -> Geometry:
        """No crop, the photo at the target size (what diffusers' pipelines assume)."""
        return cls(tuple(hw), (0, 0), tuple(hw))


@dataclass(frozen=True)
class Placement:
    """Where the model-sized image came from: it is ``original.crop(box)`` resized to ``target``.

    ``box`` = (left, top, right, bottom) in original pixels. For "crop" it lies inside the
    photo; for "pad" it extends past it (the bars are white). One rule serves both modes.
    """

    orig_size: tuple[int, int]  # (W, H) of the original photo
    target: tuple[int, int]  # (H, W) of the model-sized image
    mode: str  # "crop" | "pad"
    box: tuple[int, int, int, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "orig_size": list(self.orig_size),
            "target": list(self.target),
            "mode": self.mode,
            "box": list(self.box),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Placement:
        return cls(tuple(d["orig_size"]), tuple(d["target"]), d["mode"], tuple(d["box"]))

    def geometry(self, hw: tuple[int, int] | None = None) -> Geometry:
        """SDXL-style geometry of the fitted image at size hw (default: the fitted size): the
        photo's (H, W) and the crop's top-left in the photo resized so the box spans hw."""
        th, tw = hw or self.target
        left, top, right, bottom = self.box
        sy, sx = th / (bottom - top), tw / (right - left)
        crop = (max(0, round(top * sy)), max(0, round(left * sx)))  # pad: the box starts outside
        return Geometry((self.orig_size[1], self.orig_size[0]), crop, (th, tw))


def placement_for(orig_size: tuple[int, int], hw: tuple[int, int], mode: str) -> Placement:
    if mode not in ("crop", "pad"):
        raise UserError(f"unknown --resize {mode!r}", "use crop or pad")
    w, h = orig_size
    th, tw = hw
    aspect = tw / th
    wide = w / h > aspect
    if mode == "crop":
        if wide:
            cw = max(1, round(h * aspect))
            left = (w - cw) // 2
            box = (left, 0, left + cw, h)
        else:
            ch = max(1, round(w / aspect))
            top = (h - ch) // 2
            box = (0, top, w, top + ch)
    else:
        if wide:
            ch = max(h, round(w / aspect))
            top = -((ch - h) // 2)
            box = (0, top, w, top + ch)
        else:
            cw = max(w, round(h * aspect))
            left = -((cw - w) // 2)
            box = (left, 0, left + cw, h)
    return Placement((w, h), (th, tw), mode, box)


def _crop(img: Image.Image, box: tuple[int, int, int, int], fill) -> Image.Image:
    x1, y1, x2, y2 = box
    canvas = Image.new(img.mode, (x2 - x1, y2 - y1), fill)
    canvas.paste(img, (-x1, -y1))
    return canvas


def fit_image(
    img: Image.Image, hw: tuple[int, int], mode: str = "crop"
) -> tuple[Image.Image, Placement]:
    """Center-crop or pad (white) to the aspect of ``hw`` = (H, W), then resize to it."""
    p = placement_for(img.size, hw, mode)
    fitted = _crop(img, p.box, (255, 255, 255)).resize((hw[1], hw[0]), RESAMPLE)
    return fitted, p


def paste_back(edited: Image.Image, p: Placement, original: Image.Image) -> Image.Image:
    """Put a model-sized edit back into the original photo at its full size and aspect."""
    x1, y1, x2, y2 = p.box
    out = original.convert("RGB").copy()
    out.paste(edited.convert("RGB").resize((x2 - x1, y2 - y1), RESAMPLE), (x1, y1))
    return out


def mask_image(path: str | Path, hw: tuple[int, int], p: Placement) -> Image.Image:
    """The mask as a greyscale image at output size hw; white = may change.

    The mask may be drawn on the original photo (same size; cropped/padded like the photo)
    or on the model-sized image (exactly H x W).
    """
    m = _open(path, "mask")
    m = ImageOps.exif_transpose(m) if m.mode != "I;16" else m
    m = to_rgb(m).convert("L")
    if m.size == tuple(p.orig_size):
        m = _crop(m, placement_for(p.orig_size, hw, p.mode).box, 0)
    elif m.size != (hw[1], hw[0]):
        raise UserError(
            f"mask {path} is {m.width}x{m.height}, but the photo is "
            f"{p.orig_size[0]}x{p.orig_size[1]} and the output {hw[1]}x{hw[0]}",
            "draw the mask at one of those sizes",
        )
    return m.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)


def load_mask(path: str | Path, hw: tuple[int, int], p: Placement) -> Tensor:
    """(1, H, W) float mask in [0, 1] at output size hw (see :func:`mask_image`)."""
    import torch

    m = mask_image(path, hw, p)
    return torch.from_numpy(np.asarray(m, dtype=np.float32) / 255.0)[None]


def pil_to_tensor(img: Image.Image) -> Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in [-1, 1] (the VAE's input range)."""
    import torch

    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None] * 2.0 - 1.0


def tensor_to_pil(x: Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL images, rounded like diffusers' numpy_to_pil."""
    a = (x.detach().float().cpu() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray((im * 255).round().astype(np.uint8)) for im in a]
