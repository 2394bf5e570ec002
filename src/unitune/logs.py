"""Third-party chatter off by default: transformers', diffusers' and the hub's log lines, warnings
and load bars say nothing a unitune user can act on, and they bury unitune's own one-line errors
and warnings. unitune's progress bars stay; ``--verbose`` lets everything through."""

from __future__ import annotations

import os
import warnings

from .errors import UnituneWarning

THIRD_PARTY = (
    "transformers",
    "diffusers",
    "huggingface_hub",
    "peft",
    "accelerate",
    "torch",
    "torchao",
)


def configure(verbose: bool) -> None:
    """Call first thing, before the libraries are imported (they read these at import); then
    :func:`quiet_libraries` once the arguments are checked, before a model loads."""
    if verbose:
        return
    for var, value in (
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("DIFFUSERS_VERBOSITY", "error"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
    ):
        os.environ.setdefault(var, value)
    for mod in THIRD_PARTY:
        warnings.filterwarnings("ignore", module=rf"{mod}(\.|$)")
    # unitune's own warnings always show, whichever frame they are attributed to (a function
    # under @torch.no_grad() reports torch's wrapper as the caller)
    warnings.filterwarnings("default", category=UnituneWarning)


def quiet_libraries() -> None:
    """Errors only from transformers, diffusers, torch and torchao, and the load bars off
    (diffusers' bar reads no environment variable). Imports them: call it just before a model
    loads."""
    import logging

    import torch  # noqa: F401 - torch sets up its loggers on import: set their level after

    # torch's and torchao's own loggers (diffusers imports torchao when it is installed, which
    # reports kernels it cannot load for this machine): errors only
    for name in ("torch", "torchao"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for lib in (tlog, dlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
