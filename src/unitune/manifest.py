"""A tune folder's ``manifest.json`` as a typed, versioned, frozen :class:`Manifest`.

Read once (``Manifest.from_json`` checks the type of every key the code reads and refuses a bad
file in one line), written by :class:`unitune.tunefolder.TuneFolder`, its one owner. Nobody reads
the JSON by string key. Keys this version does not know are kept on rewrite (``extra``), so a
folder written by a newer unitune survives an older one's edit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .config import TuneConfig, show_value
from .config_checks import int_list, number_list, plain_int
from .errors import UserError
from .images import Placement

FORMAT = "unitune-tune"  # the manifest's "format" key: a unitune tune folder
FORMAT_VERSION = 1  # bumped when a key changes meaning; older versions are read as they were
MANIFEST = "manifest.json"
_FIX = "re-run `unitune tune --overwrite` on this folder"


def settings_dict(cfg: TuneConfig) -> dict[str, Any]:
    """The settings as the manifest stores them (tuples become lists)."""
    return json.loads(json.dumps(asdict(cfg)))


@dataclass(frozen=True)
class ImageRecord:
    """The photo a tune was made from."""

    sha256: str  # images.image_sha256 of the upright RGB pixels
    source: str | None = None  # the path it was read from
    size: tuple[int, int] | None = None  # (width, height) as read


@dataclass(frozen=True)
class CheckpointRecord:
    """One saved checkpoint: its file is written first, then this record, which vouches for it."""

    file: str  # under the tune folder, e.g. checkpoints/step-000016.safetensors
    size: int | None = None  # bytes written (absent in folders written before it existed)
    sha256: str | None = None  # of the file (likewise)
    loss: float | None = None  # mean training loss since the previous checkpoint
    seconds: float | None = None  # training time since the run (re)started
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this version does not know

    def to_json(self) -> dict[str, Any]:
        out = {"file": self.file, "size": self.size, "sha256": self.sha256, "loss": self.loss}
        if self.seconds is not None:
            out["seconds"] = self.seconds
        return {**{k: v for k, v in out.items() if v is not None or k == "file"}, **self.extra}


@dataclass(frozen=True)
class Manifest:
    """What a tune folder holds and how it was made."""

    model: str  # the model reference as given (a short name, folder, file or hub id)
    settings: TuneConfig  # every tune setting, the model's defaults filled in
    image: ImageRecord  # the photo
    resolution: tuple[int, int]  # (H, W) the model-sized image the tune saw
    placement: Placement  # where that image sits in the photo
    model_path: str | None = None  # the resolved reference that was loaded
    family: str | None = None  # backbones.FAMILIES name
    vae: str | None = None  # --vae, used by edits too
    quantize: str | None = None  # the base's weights while tuning (--quantize)
    model_digest: str | None = None  # of the weights as loaded: the same name, other weights?
    size_multiple: int | None = None  # edit --size must be a multiple of it
    prompt: str | None = None  # c_hat: the prompt the tune was fine-tuned on
    versions: Mapping[str, str] = field(default_factory=dict)  # unitune, torch, diffusers ...
    status: str | None = None  # "running" until the last checkpoint, then "complete"
    checkpoints: Mapping[int, CheckpointRecord] = field(default_factory=dict)  # step -> record
    loss_history: tuple[float, ...] = ()  # the loss of every training step so far
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this version does not know

    @property
    def tuned_prompt(self) -> str:
        """c_hat: the prompt the tune was fine-tuned on, e.g. "a photo of a beikkpic cat"."""
        return self.prompt or self.settings.prompt()

    @property
    def base_ref(self) -> str:
        """The base model a tune was fine-tuned from (resolved reference, else the name given)."""
        return str(self.model_path or self.model)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to manifest.json."""
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "model": self.model,
            "model_path": self.model_path,
            "family": self.family,
            "vae": self.vae,
            "quantize": self.quantize,
            "model_digest": self.model_digest,
            "image": {
                "source": self.image.source,
                "sha256": self.image.sha256,
                "size": list(self.image.size) if self.image.size else None,
            },
            "placement": self.placement.to_dict(),
            "resolution": list(self.resolution),
            "size_multiple": self.size_multiple,
            "prompt": self.prompt,
            "settings": settings_dict(self.settings),
            "versions": dict(self.versions),
            "status": self.status,
            "checkpoints": {str(s): r.to_json() for s, r in sorted(self.checkpoints.items())},
            "loss_history": list(self.loss_history),
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: Any, where: str | Path = MANIFEST) -> Manifest:
        """Check ``data`` (parsed JSON) and type it, or a one-line UserError naming the key."""
        check_manifest_shape(data, where)
        if data.get("format") != FORMAT:
            raise UserError(f"{where} is not a unitune manifest", "pass a tune folder")
        st = data["settings"]
        im = data["image"]
        known = {f.name for f in fields(cls)} | {"format"}
        ck_known = {"file", "size", "sha256", "loss", "seconds"}
        return cls(
            model=data["model"],
            settings=TuneConfig(**{**st, "save_at": tuple(st["save_at"])}),
            image=ImageRecord(
                im["sha256"], im.get("source"), tuple(im["size"]) if im.get("size") else None
            ),
            resolution=tuple(data["resolution"]),
            placement=Placement.from_dict(data["placement"]),
            model_path=data.get("model_path"),
            family=data.get("family"),
            vae=data.get("vae"),
            quantize=data.get("quantize"),
            model_digest=data.get("model_digest"),
            size_multiple=data.get("size_multiple"),
            prompt=data.get("prompt"),
            versions=dict(data.get("versions") or {}),
            status=data.get("status"),
            checkpoints={
                int(s): CheckpointRecord(
                    r["file"],
                    r.get("size"),
                    r.get("sha256"),
                    r.get("loss"),
                    r.get("seconds"),
                    {k: v for k, v in r.items() if k not in ck_known},
                )
                for s, r in data.get("checkpoints", {}).items()
            },
            loss_history=tuple(data.get("loss_history", [])),
            format_version=data.get("format_version", FORMAT_VERSION),
            extra={k: v for k, v in data.items() if k not in known},
        )


def check_manifest_shape(manifest: Any, where: str | Path = MANIFEST) -> None:
    """A manifest that is valid JSON of the wrong shape (a list, "settings" not an object, a
    missing key ...) refused in one line: the types of every key the code reads."""
    fix = _FIX
    if not isinstance(manifest, dict):
        raise UserError(
            f"{where} is not a unitune manifest (a JSON {type(manifest).__name__}, not an object)",
            fix,
        )

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise UserError(
                f"{where}: {key!r} must be {what}, got {show_value(manifest.get(key))}", fix
            )

    m = manifest
    need("model", isinstance(m.get("model"), str), "a model reference")
    need("model_path", isinstance(m.get("model_path", ""), (str, type(None))), "a path")
    need("settings", isinstance(m.get("settings"), dict), "an object of tune settings")
    st = m["settings"]
    if not int_list(st.get("save_at")):
        got = show_value(st.get("save_at"))
        raise UserError(f"{where}: settings 'save_at' must be a list of integers, got {got}", fix)
    try:
        TuneConfig(**{**st, "save_at": tuple(st["save_at"])})
    except TypeError as e:
        raise UserError(f"{where}: bad settings ({show_value(str(e), 80)})", fix) from None
    need("checkpoints", isinstance(m.get("checkpoints", {}), dict), "an object of step -> record")
    for step, rec in m.get("checkpoints", {}).items():
        ok = isinstance(step, str) and step.isascii() and step.isdigit() and len(step) < 10
        ok = ok and isinstance(rec, dict) and isinstance(rec.get("file"), str)
        ok = ok and isinstance(rec.get("loss", 0.0), (int, float))
        ok = ok and (rec.get("size") is None or plain_int(rec.get("size")))
        ok = ok and isinstance(rec.get("sha256", ""), (str, type(None)))
        ok = ok and isinstance(rec.get("seconds", 0.0), (int, float, type(None)))
        if not ok:
            raise UserError(
                f"{where}: checkpoint {show_value(step)} has a bad record {show_value(rec)}", fix
            )
    image = m.get("image")
    need(
        "image",
        isinstance(image, dict)
        and isinstance(image.get("sha256"), str)
        and (image.get("size") is None or int_list(image.get("size"), 2))
        and isinstance(image.get("source", ""), (str, type(None))),
        'an object with "sha256"',
    )
    need(
        "resolution",
        int_list(m.get("resolution"), 2) and min(m["resolution"]) > 0,
        "[height, width]",
    )
    need(
        "size_multiple",
        m.get("size_multiple") is None
        or (plain_int(m["size_multiple"]) and m["size_multiple"] > 0),
        "a positive integer",
    )
    pl = m.get("placement")
    ok = isinstance(pl, dict) and int_list(pl.get("orig_size"), 2) and int_list(pl.get("target"), 2)
    ok = ok and isinstance(pl.get("mode"), str) and number_list(pl.get("box"), 4)
    need("placement", ok, "an object of orig_size, target, mode and box")
    for key in ("family", "vae", "quantize", "model_digest", "prompt", "status"):
        need(key, m.get(key) is None or isinstance(m[key], str), "text")
    vs = m.get("versions")
    ok = vs is None or (isinstance(vs, dict) and all(isinstance(v, str) for v in vs.values()))
    need("versions", ok, "an object of versions")
    need(
        "format_version",
        m.get("format_version") is None or plain_int(m["format_version"]),
        "an integer",
    )
    need(
        "loss_history",
        number_list(m.get("loss_history", []), len(m.get("loss_history", [])))
        if isinstance(m.get("loss_history", []), list)
        else False,
        "a list of numbers",
    )
