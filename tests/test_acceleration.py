"""--channels-last and --compile (config.Acceleration) change speed, not results."""

from __future__ import annotations

import numpy as np
import pytest

from unitune.config import Acceleration, EditConfig, TuneConfig
from unitune.edit import Editor
from unitune.tune import tune

# every test here loads or tunes a tiny model end to end: out of the fast subset, still in CI
pytestmark = pytest.mark.slow

EDIT = EditConfig(checkpoint=2, t0=0.8, steps=4, seeds=(0, 1), interpolate=False)


def _edit(tune_dir, accel: Acceleration | None) -> np.ndarray:
    return Editor(tune_dir, "cpu", accel=accel).edit("a dog", EDIT, progress=False).pixels.numpy()


def _tune(tiny_model, photo, out, accel: Acceleration | None):
    cfg = TuneConfig(steps=2, save_at=(2,))
    return tune(photo, out, cfg, model=tiny_model, device="cpu", progress=False, accel=accel)


@pytest.fixture(scope="module")
def plain(tiny_model, photo, tmp_path_factory):
    folder = _tune(tiny_model, photo, tmp_path_factory.mktemp("plain") / "t", None)
    return folder, _edit(folder.path, None)


def test_channels_last_tunes_and_edits_the_same(tiny_model, photo, tmp_path, plain):
    folder, ref = plain
    accel = Acceleration(channels_last=True)
    cl = _tune(tiny_model, photo, tmp_path / "t", accel)
    losses = [cl.manifest.loss_history, folder.manifest.loss_history]
    np.testing.assert_allclose(*losses, rtol=1e-4)
    np.testing.assert_allclose(_edit(cl.path, accel), ref, atol=1e-4)


@pytest.mark.slow
def test_compiled_denoiser_edits_the_same(plain):
    """torch.compile (inductor, C++ on the CPU) fuses kernels: float rounding moves, not images."""
    folder, ref = plain
    np.testing.assert_allclose(_edit(folder.path, Acceleration(compile=True)), ref, atol=2e-3)


def test_attention_runs_through_pytorch_sdpa(tiny_models):
    """diffusers' default attention processor, the one that calls
    torch.nn.functional.scaled_dot_product_attention, in every family's denoiser."""
    from unitune.backbones import load_model

    # the UNets', SD3's joint and FLUX's processors, and the 2026 families' (their own classes,
    # each through diffusers' dispatch_attention_fn, whose default backend is PyTorch's SDPA)
    sdpa = {"AttnProcessor2_0", "JointAttnProcessor2_0", "FluxAttnProcessor"}
    sdpa |= {"ZSingleStreamAttnProcessor", "QwenDoubleStreamAttnProcessor2_0"}
    sdpa |= {"Flux2AttnProcessor", "Flux2ParallelSelfAttnProcessor"}
    for ref in tiny_models.values():
        net = load_model(ref, "cpu").module
        procs = {type(m.processor).__name__ for m in net.modules() if hasattr(m, "processor")}
        assert procs and procs <= sdpa, (ref, procs)
