"""Adafactor (Shazeer & Stern, 2018), the optimizer UniTune tunes with, batched over parameters.

The update is the one ``transformers.optimization.Adafactor`` computes with
``scale_parameter=False, relative_step=False, warmup_init=False`` (the setting UniTune uses: a
fixed learning rate, no first moment, no weight decay), step for step:

    beta2_t = 1 - t^decay_rate
    v       = beta2_t * v + (1 - beta2_t) * (g^2 + eps1)      second moment; for a tensor of
                                                              rank >= 2 only its row and column
                                                              means over the last two dims
    u       = g / sqrt(v_hat)                                 v_hat = row x col / mean(row)
    u       = u / max(1, RMS(u) / clip_threshold)
    p       = p - lr * u

Why not transformers' own: it runs about 20 small tensor operations per parameter in Python,
one parameter at a time (and computes each parameter's RMS every step, which only its
``scale_parameter`` option reads). On a small network that overhead is a quarter of a CPU
tuning step. Here every elementwise operation runs once over a bucket of parameters through
PyTorch's ``_foreach`` kernels (only the row/column means of the factored tensors stay per
tensor). Buckets hold at most ``BUCKET`` elements: the temporaries (g^2, the updates) then stay
a few tens of MB instead of two copies of the whole network (+6.8 GB for SD 1.5's UNet, whose
fresh pages alone made a CPU step 35% slower than transformers'). The
arithmetic is the same, operation for operation, so a tune gives the same weights (checked
against transformers' implementation in tests/test_adafactor.py). The state keeps
transformers' names (``step``, ``exp_avg_sq_row``, ``exp_avg_sq_col``, ``exp_avg_sq``), so a
tune interrupted before this module existed resumes with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

HALF = (torch.float16, torch.bfloat16)
BUCKET = 1 << 22  # elements per batch of parameters (16 MB of fp32 per temporary)


class Adafactor(torch.optim.Optimizer):
    """Adafactor with a fixed learning rate and no first moment (see the module docstring)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        eps: tuple[float, float] = (1e-30, 1e-3),  # eps1 regularizes g^2; eps2 is unused here
        clip_threshold: float = 1.0,  # update RMS above this is scaled down to it
        decay_rate: float = -0.8,  # beta2_t = 1 - t^decay_rate
    ) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        defaults = {
            "lr": lr,
            "eps": eps,
            "clip_threshold": clip_threshold,
            "decay_rate": decay_rate,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim's contract
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            # parameters whose step count differs (one added to a resumed run) get their own beta
            by_step: dict[int, list[Tensor]] = {}
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients")
                st = self.state[p]
                if not st:
                    _init_state(st, p.grad)
                st["step"] += 1
                by_step.setdefault(st["step"], []).append(p)
            for t, ps in by_step.items():
                for bucket in _buckets(ps):
                    self._update(group, bucket, 1.0 - math.pow(t, group["decay_rate"]))
        return loss

    def _update(self, group: dict, params: list[Tensor], beta: float) -> None:
        """One step for parameters that share the step count (and so beta2_t)."""
        grads = [p.grad.float() if p.grad.dtype in HALF else p.grad for p in params]
        # fp32 working copies of half-precision parameters, copied back at the end
        work = [p.float() if p.dtype in HALF else p for p in params]
        sq = torch._foreach_mul(grads, grads)  # g^2 (what g**2 computes)
        torch._foreach_add_(sq, group["eps"][0])
        fac = [i for i, g in enumerate(grads) if g.dim() >= 2]
        flat = [i for i, g in enumerate(grads) if g.dim() < 2]
        updates: list[Tensor | None] = [None] * len(params)
        if fac:
            rows = [self.state[params[i]]["exp_avg_sq_row"] for i in fac]
            cols = [self.state[params[i]]["exp_avg_sq_col"] for i in fac]
            torch._foreach_mul_(rows, beta)
            torch._foreach_add_(rows, [sq[i].mean(dim=-1) for i in fac], alpha=1.0 - beta)
            torch._foreach_mul_(cols, beta)
            torch._foreach_add_(cols, [sq[i].mean(dim=-2) for i in fac], alpha=1.0 - beta)
            for i, r, c in zip(fac, rows, cols, strict=True):
                # v_hat^-1/2 = (row / mean(row))^-1/2 (outer) col^-1/2, never materializing v_hat
                r_fac = (r / r.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
                updates[i] = torch.mul(r_fac, c.unsqueeze(-2).rsqrt())
            torch._foreach_mul_([updates[i] for i in fac], [grads[i] for i in fac])
        if flat:
            vs = [self.state[params[i]]["exp_avg_sq"] for i in flat]
            torch._foreach_mul_(vs, beta)
            torch._foreach_add_(vs, [sq[i] for i in flat], alpha=1.0 - beta)
            rs = torch._foreach_rsqrt(vs)
            torch._foreach_mul_(rs, [grads[i] for i in flat])
            for i, u in zip(flat, rs, strict=True):
                updates[i] = u
        ups: list[Tensor] = updates  # type: ignore[assignment] - every slot is filled above
        # clip: u / max(1, RMS(u) / d), RMS(u) = ||u|| / sqrt(numel), one norm kernel for all
        norms = torch.stack(torch._foreach_norm(ups))
        roots = torch.tensor(
            [u.numel() ** 0.5 for u in ups], dtype=norms.dtype, device=norms.device
        )
        denom = (norms / roots / group["clip_threshold"]).clamp_(min=1.0)
        torch._foreach_div_(ups, list(denom.unbind()))
        torch._foreach_mul_(ups, group["lr"])
        torch._foreach_sub_(work, ups)
        for p, w in zip(params, work, strict=True):
            if w is not p:
                p.copy_(w)


def _buckets(params: list[Tensor]) -> list[list[Tensor]]:
    """Consecutive runs of parameters of at most BUCKET elements (a larger tensor alone)."""
    out: list[list[Tensor]] = [[]]
    size = 0
    for p in params:
        if out[-1] and size + p.numel() > BUCKET:
            out.append([])
            size = 0
        out[-1].append(p)
        size += p.numel()
    return out


def _init_state(st: dict, grad: Tensor) -> None:
    st["step"] = 0
    if grad.dim() >= 2:  # factored: running means over the last dim (rows) and the one before
        st["exp_avg_sq_row"] = torch.zeros(grad.shape[:-1], dtype=torch.float32, device=grad.device)
        st["exp_avg_sq_col"] = torch.zeros(
            grad.shape[:-2] + grad.shape[-1:], dtype=torch.float32, device=grad.device
        )
    else:
        st["exp_avg_sq"] = torch.zeros(grad.shape, dtype=torch.float32, device=grad.device)
