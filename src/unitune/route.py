"""The global / local route (beyond the papers; measured on the editing benchmark,
docs/BENCHMARKS.md "The automatic mask's map, and a global / local route by it"): before anything
is sampled, DiffEdit's difference map (automask.py) says whether an edit is local or global, and
each kind samples the config that keeps the photo best for it.

Why the map can tell: a local edit (recolour, reshape, add or outline an object) makes the map a
few bright cells where the edit belongs; a global one (a new background, a style) raises the
whole map as a broad field whose brightest cells are, if anything, the objects it must keep. The
map's spread s = std / mean (one number, no cut) separates them: on the automask-rules bench's 8
scenes every background edit had s <= 0.80 and every recolour, reshape and outline s >= 1.28
(adds with three objects fell between, 0.78-0.87).

What each samples: a local edit keeps the photo best with negative-prompt inversion (inversion.py,
Miyake et al. 2023) from t0 ``route_t0`` at CFG ``route_cfg`` inside the automatic mask cut from
this same map (the bench's most faithful keep config). That config fails global edits (the mask
marks the objects, not the background; the inversion start keeps the old background), so a
global edit samples as its EditConfig sets it (by default the noise start: UniTune's own edit).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor

from .config import EditConfig


@dataclass(frozen=True, eq=False)
class Route:
    """What the route found for one edit."""

    spread: float  # std / mean of the raw map
    local: bool  # spread >= EditConfig.route_spread: sample the local (keep) config
    map: Tensor  # (1, 1, h, w) the raw map, under the local config (its mask is cut from it)

    @property
    def kind(self) -> str:
        return "local" if self.local else "global"

    def describe(self) -> str:
        return f"{self.kind} edit (map spread {self.spread:.2f})"


def spread(m: Tensor) -> float:
    """std / mean of a raw difference map (any shape): near 0 for a flat field, large for a few
    bright cells. A zero map (the two prompts agree everywhere) has spread 0: nothing is local."""
    m = m.detach().float()
    mean = float(m.mean())
    return float(m.std() / mean) if mean > 0 else 0.0


def local_config(cfg: EditConfig) -> EditConfig:
    """The config a local edit samples: negative-prompt inversion from ``route_t0`` at CFG
    ``route_cfg`` inside the automatic mask (the model's inversion sampler: ``sampler`` None)."""
    return replace(
        cfg,
        start="inversion",
        inversion_negative=True,
        auto_mask=True,
        t0=cfg.route_t0,
        cfg=cfg.route_cfg,
        sampler=None,
    )


def decide(m: Tensor, cut: float) -> Route:
    """The route of an edit whose raw map (under :func:`local_config`) is ``m``."""
    s = spread(m)
    return Route(s, s >= cut, m)
