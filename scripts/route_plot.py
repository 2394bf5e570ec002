"""The route check's picture: success against fidelity of each config and route that
scripts/automask_route.py scored, on the held-out scenes (or another subset), with the goal's
corner (0.85 success at 0.85 fidelity).

    python scripts/route_plot.py docs/route_check.json --png docs/route_check.png
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

NAMES = {  # automask_route.py's row names -> the picture's labels
    "unitune+interp:c32 t0=0.9 w=7.5": "default (c32 t0 0.9 w 7.5)",
    "unitune+inversion-neg+automask+interp:c32 t0=0.8 w=3": "keep config alone",
    "unitune+inversion-neg+interp:c32 t0=0.8 w=3": "inversion-neg, no mask",
    "sdedit+interp:t0=0.9 w=7.5": "SDEdit t0 0.9",
    "sdedit+interp:t0=1 w=7.5": "SDEdit t0 1",
}


def label(route: str) -> str:
    if route.startswith("global -> "):
        g = route.removeprefix("global -> ").split(";")[0]
        if g.startswith("unitune+interp:"):  # global edits as set: what --route auto does
            return "--route auto"
        return "route, global: " + NAMES.get(g, g)
    return NAMES.get(route, route)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("check", type=Path, help="automask_route.py's JSON")
    ap.add_argument("--subset", default="held out")
    ap.add_argument("--png", type=Path, required=True)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = json.loads(args.check.read_text())["subsets"][args.subset]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    ax.axvline(0.85, color="grey", lw=0.8, ls="--")
    ax.axhline(0.85, color="grey", lw=0.8, ls="--")
    ax.text(0.851, 0.852, "goal", color="grey", fontsize=8)
    for r in sub["rows"]:
        name = label(r["route"])
        x, y = r["fidelity"]["value"], r["success"]["value"]
        routed = r["route"].startswith("global -> ")  # a route, not one config
        ax.scatter(x, y, s=60 if routed else 35, marker="*" if routed else "o")
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xlabel("fidelity (1 - LPIPS outside the edit)")
    ax.set_ylabel("success (the oracle reads the asked edit)")
    ax.set_title(f"global / local route, {args.subset} ({len(sub['scenes'])} scenes)")
    fig.tight_layout()
    tmp = args.png.with_suffix(".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, args.png)


if __name__ == "__main__":
    main()
