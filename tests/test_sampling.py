"""The one sampling loop (sampling.sample) on a fake denoiser and real diffusers schedulers, no
model: per-sample starts, the mask, multistep refusals, argument checks, on_step."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from unitune.sampling import Start, sample

BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
SCHEDULERS = {
    "ddim": lambda: DDIMScheduler(
        **BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1
    ),
    "euler": lambda: EulerDiscreteScheduler(**BETAS, steps_offset=1),
    "dpm": lambda: DPMSolverMultistepScheduler(**BETAS),
}
STEPS = 10
SHAPE = (4, 8, 8)


def fake(x, t):
    return 0.1 * x


def _data(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(b, *SHAPE, generator=g)
    x0 = torch.randn(1, *SHAPE, generator=g)
    mask = torch.zeros(1, 1, *SHAPE[1:])
    mask[..., 2:6, 1:5] = 1.0
    return noise, x0, mask


def _run(name, noise, start, **kw):
    return sample(fake, SCHEDULERS[name](), noise, steps=STEPS, start=start, progress=False, **kw)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_one_start_per_sample_equals_each_start_alone(name, masked):
    t0s = (1.0, 0.5, 0.01, 0.8)  # 0.01: no step is left, the sample is x0
    noise, x0, mask = _data(len(t0s))
    m = mask if masked else None
    row = _run(name, noise, Start(t0s, x0, m))
    for k, t0 in enumerate(t0s):
        alone = _run(name, noise[k : k + 1], Start(t0, x0, m))
        torch.testing.assert_close(row[k : k + 1], alone, atol=1e-6, rtol=0)
    assert torch.equal(row[2:3], x0)
    assert not torch.allclose(row[0:1], row[1:2], atol=1e-3)  # the starts do differ


def test_per_sample_generators_draw_as_each_sample_alone():
    """DDIM eta 1: one generator per sample gives each sample its own step noise."""
    t0s = (0.6, 1.0)  # the later start first: each draws from its own generator
    noise, x0, _ = _data(2)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    row = _run("ddim", noise, Start(t0s, x0), generator=gens(5, 6), eta=1.0)
    for k, (t0, s) in enumerate(zip(t0s, (5, 6))):
        alone = _run("ddim", noise[k : k + 1], Start(t0, x0), generator=gens(s), eta=1.0)
        torch.testing.assert_close(row[k : k + 1], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "name, t0",
    [(n, t) for n in ("ddim", "euler") for t in (1.0, 0.5, (1.0, 0.3))]
    + [("dpm", 1.0), ("dpm", 0.5)],
)
def test_mask_keeps_the_known_region_exactly(name, t0):
    noise, x0, mask = _data(2)
    out = _run(name, noise, Start(t0, x0, mask))
    keep = (mask == 0).expand_as(out)
    assert torch.equal(out[keep], x0.expand_as(out)[keep])
    assert not torch.allclose(out[~keep], x0.expand_as(out)[~keep], atol=1e-2)  # inside: sampled


def test_multistep_refuses_differing_starts_and_takes_equal_ones():
    noise, x0, _ = _data(2)
    with pytest.raises(ValueError, match="multistep"):
        _run("dpm", noise, Start((1.0, 0.5), x0))
    equal = _run("dpm", noise, Start((0.5, 0.5), x0))
    torch.testing.assert_close(equal, _run("dpm", noise, Start(0.5, x0)), atol=1e-6, rtol=0)
    _run("ddim", noise, Start((1.0, 0.5), x0))  # single-step: differing starts are fine


@pytest.mark.parametrize("t0", [-0.1, 1.5, (0.5,), (0.5, 0.5, 0.5), (0.5, 1.2)])
def test_bad_t0_refused(t0):
    noise, x0, _ = _data(2)
    with pytest.raises(ValueError, match="t0"):
        _run("ddim", noise, Start(t0, x0))


def test_sdedit_and_mask_need_x0():
    noise, _, mask = _data(1)
    for start in (Start(0.5), Start(1.0, None, mask)):
        with pytest.raises(ValueError, match="x0"):
            _run("ddim", noise, start)


@pytest.mark.parametrize(
    "t0, run", [(1.0, 10), (0.5, 5), (0.35, 3), (0.01, 0), ((1.0, 0.5), 10), ((0.5, 0.3), 5)]
)
@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_on_step_once_per_step_run_from_zero(name, t0, run):
    noise, x0, _ = _data(2)
    seen = []
    sch = SCHEDULERS[name]()
    sample(
        fake,
        sch,
        noise,
        steps=STEPS,
        start=Start(t0, x0),
        progress=False,
        on_step=lambda i, t, lat: seen.append((i, float(t), lat.shape[0])),
    )
    assert [i for i, _, _ in seen] == list(range(run))
    assert [t for _, t, _ in seen] == [float(t) for t in sch.timesteps[STEPS - run :]]
    assert all(b == 2 for _, _, b in seen)  # the whole batch's latents
