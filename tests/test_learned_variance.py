"""The hybrid loss for learned variances (Improved DDPM) against diffusers' own variance rule."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from unitune.guidance import keep_variance
from unitune.learned_variance import hybrid_loss, model_log_variance, vlb_term


def _sched():
    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range"
    )


def test_learned_range_log_variance_is_the_schedulers():
    s = _sched()
    s.set_timesteps(1000)
    for t in (1, 10, 500, 999):
        for v in (-1.0, -0.3, 0.4, 1.0):
            ours = model_log_variance(s.alphas_cumprod, torch.tensor([[v]]), torch.tensor([t]))
            theirs = s._get_variance(t, predicted_variance=torch.tensor(v))
            assert abs(ours.item() - float(theirs)) < 1e-4, (t, v)  # float32 tables there


def test_the_bound_is_lowest_at_the_true_posterior_variance_and_trains_only_v():
    s = _sched()
    ab = s.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((4, 3, 8, 8), generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([5, 200, 600, 900])
    x_t = s.add_noise(x0, noise, t)
    # with the exact eps, the KL is 0 where the variance is the posterior's (v = -1: beta~_t)
    at_post = vlb_term(ab, x0, x_t, t, noise, -torch.ones_like(x0))
    at_beta = vlb_term(ab, x0, x_t, t, noise, torch.ones_like(x0))
    assert at_post.abs().max() < 1e-4 and (at_beta > at_post).all()
    out = torch.cat([noise + 0.1, torch.zeros_like(x0)], 1).requires_grad_(True)
    hybrid_loss(ab, out, noise, x0, x_t, t).backward()
    assert out.grad[:, 3:].abs().sum() > 0  # the bound reaches v
    # the eps half's gradient is the MSE's alone (the bound's mean term is stopped)
    mse_grad = 2 * 0.1 / out[:, :3].numel()
    assert torch.allclose(out.grad[:, :3], torch.full_like(x0, mse_grad), atol=1e-8)


def test_guidance_keeps_the_positive_predictions_variance():
    u, c = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4)
    mixed = u + 5 * (c - u)
    out = keep_variance(mixed, c, 3)
    assert torch.equal(out[:, :3], mixed[:, :3]) and torch.equal(out[:, 3:], c[:, 3:])
    assert (
        keep_variance(mixed[:, :3], c[:, :3], 3) is not None
        and keep_variance(mixed[:, :3], c, 3).shape[1] == 3
    )
