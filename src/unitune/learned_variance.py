"""Learned reverse-process variances (Nichol & Dhariwal 2021, "Improved DDPM"), as DeepFloyd IF
predicts them: the network outputs [eps, v] (2C channels) and the scheduler's ``learned_range``
variance is the log-space interpolation exp(f log beta_t + (1 - f) log beta~_t), f = (v + 1) / 2.

Training both halves takes the hybrid loss L_simple + lambda L_vlb (their eq. 16, lambda = 1e-3):
the plain epsilon MSE for the mean, and the variational bound's term L_t for the variance with a
stop-gradient on the mean (so the bound only shapes v). With t drawn uniformly from T = 1000
steps, lambda L_vlb = 1e-3 * T * E_t[L_t] = E_t[L_t]: the per-sample loss is MSE + L_t in bits
per dimension. Fine-tuning with the MSE alone (what diffusers' DreamBooth scripts do) leaves v
untrained while the shared weights move, which is why those scripts then switch the scheduler to
``fixed_small``; training v with the bound keeps the model's own sampler valid (README,
"DeepFloyd IF").

Shapes: x0, x_t, eps (B, C, H, W); out (B, 2C, H, W); t (B,) integer training timesteps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _gather(table: Tensor, t: Tensor, ndim: int) -> Tensor:
    return table.to(t.device)[t].float().view(-1, *([1] * (ndim - 1)))


def posterior(alphas_cumprod: Tensor, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and clipped log variance of q(x_{t-1} | x_t, x0) (their eqs. 10-12). At t = 0 the
    variance beta~_0 = 0, so its log takes beta~_1's value (as the reference implementation)."""
    ab = alphas_cumprod.double()
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    beta = 1 - ab / ab_prev
    var = beta * (1 - ab_prev) / (1 - ab)
    log_var = torch.log(torch.cat([var[1:2], var[1:]]))
    c0 = beta * ab_prev.sqrt() / (1 - ab)
    ct = (1 - ab_prev) * (1 - beta).sqrt() / (1 - ab)
    n = x0.ndim
    mean = _gather(c0, t, n) * x0.float() + _gather(ct, t, n) * x_t.float()
    return mean, _gather(log_var, t, n).expand_as(mean)


def model_log_variance(alphas_cumprod: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """``learned_range``: log variance between log beta~_t (v = -1) and log beta_t (v = 1)."""
    ab = alphas_cumprod.double()
    ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
    beta = 1 - ab / ab_prev
    var = beta * (1 - ab_prev) / (1 - ab)
    min_log = torch.log(torch.cat([var[1:2], var[1:]]))
    frac = (v.float() + 1) / 2
    n = v.ndim
    return frac * _gather(torch.log(beta), t, n) + (1 - frac) * _gather(min_log, t, n)


def _normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _discretized_nll(x0: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """-log p(x0) of 8-bit pixels in [-1, 1] under a Gaussian integrated over each pixel's bin
    (the decoder term L_0, their eq. 13)."""

    def cdf(x: Tensor) -> Tensor:  # standard normal CDF, the reference's tanh approximation
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    inv = torch.exp(-log_scale)
    c = x0.float() - mean
    upper, lower = cdf(inv * (c + 1 / 255)), cdf(inv * (c - 1 / 255))
    log_cdf_up = torch.log(upper.clamp(min=1e-12))
    log_1m_low = torch.log((1 - lower).clamp(min=1e-12))
    log_mid = torch.log((upper - lower).clamp(min=1e-12))
    x = x0.float()
    logp = torch.where(x < -0.999, log_cdf_up, torch.where(x > 0.999, log_1m_low, log_mid))
    return -logp


def vlb_term(
    alphas_cumprod: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, eps: Tensor, v: Tensor
) -> Tensor:
    """L_t per sample (B,), in bits per dimension: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for
    t > 0, the decoder's NLL at t = 0. ``eps`` should be detached (the stop-gradient)."""
    ab = _gather(alphas_cumprod.double(), t, x0.ndim)
    x0_pred = (x_t.float() - (1 - ab).sqrt() * eps.float()) / ab.sqrt()
    true_mean, true_logvar = posterior(alphas_cumprod, x0, x_t, t)
    model_mean, _ = posterior(alphas_cumprod, x0_pred, x_t, t)
    model_logvar = model_log_variance(alphas_cumprod, v, t)
    kl = _normal_kl(true_mean, true_logvar, model_mean, model_logvar)
    nll = _discretized_nll(x0, model_mean, 0.5 * model_logvar)
    per = torch.where(t.view(-1, *([1] * (x0.ndim - 1))) == 0, nll, kl)
    return per.flatten(1).mean(1) / math.log(2.0)


def hybrid_loss(
    alphas_cumprod: Tensor,
    out: Tensor,
    noise: Tensor,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    weight: Tensor | None = None,
) -> Tensor:
    """L_hybrid for a [eps, v] output: MSE(eps, noise) + L_t(v) with the mean's gradient stopped.
    ``weight`` (B,): optional per-sample weights of the MSE term."""
    c = noise.shape[1]
    eps, v = out[:, :c].float(), out[:, c:]
    per = (eps - noise.float()).pow(2).flatten(1).mean(1)
    mse = (per * weight).mean() if weight is not None else per.mean()
    return mse + vlb_term(alphas_cumprod, x0, x_t, t, eps.detach(), v).mean()
