"""`lora-from-full`: a full tune's delta compressed to a LoRA by a truncated SVD per layer, so a
full tune travels as megabytes (the same idea as kohya's and LyCORIS' extraction scripts).

For every Linear or Conv2d weight the tune changed, dW (out, in[, k, k]) is flattened to
(out, in k k) and factored: dW = U S V^T, kept to the top r singular values (a randomized SVD
when r is well below the layer's size: only the r triplets asked for are computed), and split
evenly, B = U_r sqrt(S_r) (out, r) and A = sqrt(S_r) V_r^T (r, in k k), so B A is the best rank-r
approximation of dW (Eckart-Young). A conv's A is a k x k conv into r channels and its B a 1x1
conv, as PEFT's conv LoRA is. Each layer's scale is 1 (alpha = its rank): the exported file
reproduces B A exactly at load scale 1. At full rank (r >= min(out, in k k)) B A = dW to float
precision. Biases and normalisation weights have no LoRA form that every tool reads and fuses
(PEFT's ``lora_bias`` is all-or-nothing and cannot be fused into the attention projections,
which have no bias), so they stay at their pretrained values: ``Extracted.dropped`` names them,
with the share of the delta's energy they held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Extracted:
    tensors: dict[str, Tensor]  # PEFT names: "<module>.lora_A.weight", "<module>.lora_B.weight"
    config: dict  # LoraConfig kwargs: r, lora_alpha, target_modules, rank_pattern, alpha_pattern
    dropped: list[str] = field(
        default_factory=list
    )  # delta tensors with no LoRA form (biases, norms)
    dropped_energy: float = 0.0  # their share of the delta's squared norm
    truncation_energy: float = 0.0  # share of the covered layers' squared norm the rank cut off


OVERSAMPLE, POWER_ITERATIONS = 10, 4  # randomized SVD (Halko et al. 2011): q = r + 10, 4 passes


def _top_svd(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top ``rank`` singular triplets of ``w`` (m, n): U (m, r), S (r,), V^T (r, n). A full SVD
    when the rank is near the layer's own (r + oversampling >= min(m, n)), else a randomized one
    (torch.svd_lowrank: the rank asked for, not every singular value; an SD 1.5 layer is 1280 x
    11520), seeded so an export is the same every run."""
    k = min(w.shape)
    if rank + OVERSAMPLE >= k:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :rank], s[:rank], vh[:rank]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        u, s, v = torch.svd_lowrank(w, q=rank + OVERSAMPLE, niter=POWER_ITERATIONS)
    return u[:, :rank], s[:rank], v[:, :rank].T


@torch.no_grad()
def extract_lora(delta: dict[str, Tensor], rank: int) -> Extracted:
    """delta: the checkpoint's tensors (name -> tuned - pretrained, the network's own names)."""
    tensors: dict[str, Tensor] = {}
    ranks: dict[str, int] = {}
    total = sum(float(d.float().pow(2).sum()) for d in delta.values())
    cut = covered_energy = 0.0
    covered: set[str] = set()
    for name, d in sorted(delta.items()):
        if not name.endswith(".weight") or d.ndim not in (2, 4):
            continue
        module = name[: -len(".weight")]
        w = d.float().reshape(d.shape[0], -1)  # (out, in k k)
        u, s, vh = _top_svd(w, rank)
        r = s.numel()
        root = s.sqrt()
        down = root[:, None] * vh[:r]  # (r, in k k)
        up = u[:, :r] * root[None]  # (out, r)
        if d.ndim == 4:  # conv: A is the k x k conv into r channels, B the 1x1 conv out of them
            down = down.reshape(r, *d.shape[1:])
            up = up[:, :, None, None]
        tensors[f"{module}.lora_A.weight"] = down.contiguous()
        tensors[f"{module}.lora_B.weight"] = up.contiguous()
        ranks[module] = r
        covered |= {name}
        # what the rank leaves out, measured (not estimated): ||W||^2 - ||S_r||^2, exact for a
        # projection U_r U_r^T W, which both the full and the randomized SVD give
        energy = float(w.pow(2).sum())
        covered_energy += energy
        cut += max(energy - float(s.pow(2).sum()), 0.0)
    dropped = sorted(set(delta) - covered)
    dropped_energy = sum(float(delta[n].float().pow(2).sum()) for n in dropped)
    config = {
        "r": rank,
        "lora_alpha": rank,
        "target_modules": sorted(ranks),
        # layers smaller than the rank keep all their singular values: their own r, and an
        # alpha equal to it so every layer's scale is 1
        "rank_pattern": {m: r for m, r in ranks.items() if r != rank},
        "alpha_pattern": {m: r for m, r in ranks.items() if r != rank},
    }
    return Extracted(
        tensors,
        config,
        dropped,
        dropped_energy / total if total else 0.0,
        cut / covered_energy if covered_energy else 0.0,
    )
