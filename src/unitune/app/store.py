"""The server's data directory: every file `unitune serve` writes lives under it.

Layout::

    queue.sqlite            the job queue (jobs.py)
    uploads/<sha256>.png    photos (and masks) as received, decoded and re-encoded: the name is
                            the content's hash, never a name the client sent
    tunes/tune-<job>/       tune folders (tunefolder.py)
    edits/<kind>-<job>/     edits and grids: PNGs with their parameters + sidecars

Uploads are checked by decoding them (type from the content, not the name), with a byte limit
and the CLI's megapixel limit (decompression bombs), before anything is stored.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..config import Limits
from ..errors import UserError
from ..fileio import atomic_write_bytes

MAX_UPLOAD_BYTES = 25 * 2**20  # a photo upload larger than this is refused before decoding


@dataclass(frozen=True)
class Store:
    root: Path

    @staticmethod
    def open(root: str | Path) -> Store:
        root = Path(root).resolve()
        for sub in ("uploads", "tunes", "edits"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return Store(root)

    @property
    def queue_path(self) -> Path:
        return self.root / "queue.sqlite"

    def inside(self, rel: str | Path) -> Path:
        """``root / rel``, refusing anything that would resolve outside the data directory."""
        p = (self.root / rel).resolve()
        if p != self.root and self.root not in p.parents:
            raise UserError(
                f"{str(rel)!r} is outside the server's data", "pick an item from the page"
            )
        return p

    def rel(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    def tune_dir(self, job_id: int) -> Path:
        return self.root / "tunes" / f"tune-{job_id}"

    def edit_dir(self, kind: str, job_id: int) -> Path:
        return self.root / "edits" / f"{kind}-{job_id}"

    def save_upload(self, data: bytes, what: str = "photo", mode: str = "RGB") -> str:
        """Check an uploaded image and keep it: its name under uploads/ (the content's hash)."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise UserError(
                f"the {what} is {len(data) / 2**20:.1f} MB, "
                f"more than {MAX_UPLOAD_BYTES // 2**20} MB",
                "upload a smaller file",
            )
        limit = Limits().max_megapixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    w, h = im.size  # read from the header: refuse before decoding pixels
                    if w * h > limit * 1e6:
                        raise UserError(
                            f"the {what} is {w}x{h} ({w * h / 1e6:.0f} MP), more than {limit:g} MP",
                            "upload a smaller image",
                        )
                    im.load()
                    img = im.convert(mode)
        except UserError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UserError(
                f"the {what} is a decompression bomb", "upload an ordinary image"
            ) from None
        except Exception:  # noqa: BLE001 - anything PIL cannot decode is not an image
            raise UserError(
                f"the {what} is not an image PIL can read", "upload a PNG, JPEG or WebP"
            ) from None
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        body = buf.getvalue()
        name = f"{hashlib.sha256(body).hexdigest()[:32]}.png"
        path = self.root / "uploads" / name
        if not path.exists():
            atomic_write_bytes(path, body)
        return name

    def upload(self, name: str) -> Path:
        """An upload by the name save_upload gave it."""
        if not name or "/" in name or "\\" in name or not name.endswith(".png"):
            raise UserError(f"no upload named {name!r}", "upload the photo again")
        p = self.inside(Path("uploads") / name)
        if not p.is_file():
            raise UserError(f"no upload named {name!r}", "upload the photo again")
        return p
