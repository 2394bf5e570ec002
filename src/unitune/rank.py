"""Best-of-N (beyond the papers): rank candidate edits by a score that weighs the edit against
fidelity to the base image, with no CLIP and no oracle, so it works offline on any model.

* Edit score, a diffusion classifier (Li et al. 2023, "Your diffusion model is secretly a zero-shot
  classifier"): the PRETRAINED model's denoising error on the candidate under the reference prompt
  (what the photo was) minus its error under the edit prompt. A candidate that shows the edit is
  explained better by the edit prompt, so the score is higher. Every candidate and both prompts
  share the same probe timesteps and noise (paired differences: the probe noise cancels).
* Edit region, as DiffEdit (Couairon et al. 2022): on the BASE image's latents, where the
  pretrained model's predictions under the two prompts differ (mean |difference| over the probes,
  scaled to [0, 1] by its maximum, above ``threshold``). Fidelity = LPIPS to the base outside it.
* Score = z(edit score) - balance * z(LPIPS), z-scores over the candidates of one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbones.base import Conditioning
from .config import RankConfig

Z_FLOOR = 1e-6  # std below which an axis does not separate the candidates (its z-scores are 0)


def probe_timesteps(rc: RankConfig) -> Tensor:
    return torch.linspace(rc.t_lo, rc.t_hi, rc.probes).round().long()


def zscores(x: Tensor) -> Tensor:
    """(N,) -> (N,) standardised over the candidates; 0 where they do not differ."""
    sd = x.std(unbiased=False) if x.numel() > 1 else x.new_zeros(())
    return (x - x.mean()) / sd if sd > Z_FLOOR else torch.zeros_like(x)


def combine(edit_score: Tensor, lpips: Tensor, balance: float) -> Tensor:
    """(N,), (N,) -> (N,) ranking score: higher = better edit AND more faithful."""
    return zscores(edit_score) - balance * zscores(lpips)


def edit_region(
    eps_edit: Tensor, eps_ref: Tensor, size: tuple[int, int], threshold: float
) -> Tensor:
    """DiffEdit mask. eps_*: (P, C, h, w) predictions on the base at P probes -> (1, 1, H, W) in
    {0, 1}, 1 = the edit prompt moves the prediction there (the region the edit may change)."""
    d = (eps_edit - eps_ref).abs().mean(dim=(0, 1))[None, None]  # (1, 1, h, w)
    d = F.interpolate(d.float(), size=size, mode="bilinear", align_corners=False)
    return (d >= threshold * d.max().clamp_min(1e-12)).float()


@dataclass
class Ranking:
    order: list[int]  # candidate indices, best first
    score: Tensor  # (N,) combine(edit_score, lpips)
    edit_score: Tensor  # (N,) mean (ref error - edit error); higher = shows the edit more
    lpips: Tensor  # (N,) LPIPS to the base over ``keep``
    keep: Tensor  # (1, 1, H, W) where fidelity was measured (1 = outside the edit region)

    def table(self, labels: Sequence[str]) -> str:
        rows = [f"{'rank':>4}  {'score':>6}  {'edit':>8}  {'LPIPS':>6}  candidate"]
        for r, i in enumerate(self.order, 1):
            rows.append(
                f"{r:>4}  {float(self.score[i]):>6.2f}  {float(self.edit_score[i]):>8.5f}  "
                f"{float(self.lpips[i]):>6.3f}  {labels[i]}"
            )
        return "\n".join(rows)


class Judge:
    """Scores candidates of one edit: built once per (base image, edit prompt, reference prompt)."""

    def __init__(
        self,
        editor,
        edit_prompt: str,
        ref_prompt: str,
        hw: tuple[int, int],
        rc: RankConfig = RankConfig(),
    ) -> None:
        from .images import pil_to_tensor
        from .metrics import get_lpips

        self.rc, self.bb = rc, editor.backbone
        # the pretrained model is the judge: the tuned one would favour the base image itself
        self.den = editor.state.pretrained()
        self.conds = Conditioning.cat(editor.encode([ref_prompt, edit_prompt], hw, warn=False))
        self.ts = probe_timesteps(rc).to(self.bb.device)
        x0 = editor.base_latents(hw)  # (1, C, h, w)
        g = torch.Generator("cpu").manual_seed(rc.seed)
        self.noise = torch.randn((rc.probes, *x0.shape[1:]), generator=g).to(x0)  # (P, C, h, w)
        self.base_pix = (pil_to_tensor(editor.base_image_at(hw)) / 2 + 0.5).clamp(0, 1)
        pred, _ = self._predict(x0)  # (1, 2, P, C, h, w)
        self.keep = 1 - edit_region(pred[0, 1], pred[0, 0], hw, rc.threshold)
        if self.keep.mean() < rc.min_keep:  # a global edit: judge fidelity on the whole image
            self.keep = torch.ones_like(self.keep)
        self.lpips = get_lpips("alex", self.bb.device)

    @torch.no_grad()
    def _predict(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, h, w) -> predictions (N, 2 prompts, P, C, h, w) and their targets
        (N, P, C, h, w)."""
        n, p = latents.shape[0], self.rc.probes
        x = latents[:, None].expand(n, p, *latents.shape[1:]).reshape(n * p, *latents.shape[1:])
        eps = self.noise.repeat(n, 1, 1, 1)
        t = self.ts.repeat(n)
        xt = self.bb.add_noise(x, eps, t)
        target = self.bb.target(x, eps, t)  # what the prediction should be: eps, v, ...
        cond = self.conds.repeat(n * p)  # 2 N P rows: [ref ; edit]
        out = self.den(torch.cat([xt, xt]), torch.cat([t, t]), cond)
        out = out[:, : latents.shape[1]]  # learned-variance models: the eps half of [eps, v]
        pred = out.reshape(2, n, p, *latents.shape[1:]).transpose(0, 1)
        return pred, target.reshape(n, p, *latents.shape[1:])

    @torch.no_grad()
    def score(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) candidates in [0, 1] -> (edit score (N,), LPIPS over keep (N,))."""
        dev = self.bb.device
        lat = self.bb.encode_image(pixels.to(dev) * 2 - 1)
        pred, target = self._predict(lat)
        err = ((pred.float() - target[:, None].float()) ** 2).mean(dim=(3, 4, 5))  # (N, 2, P)
        edit_score = (err[:, 0] - err[:, 1]).mean(dim=1)
        y = self.base_pix.to(dev).expand_as(pixels)  # base_pix: (1, 3, H, W)
        lp = self.lpips(pixels.to(dev).float(), y.float(), self.keep.to(dev))
        return edit_score.cpu(), lp.cpu()

    def rank(self, pixels: Tensor) -> Ranking:
        es, lp = self.score(pixels)
        sc = combine(es, lp, self.rc.balance)
        order = sorted(range(len(sc)), key=lambda i: (-float(sc[i]), i))
        return Ranking(order, sc, es, lp, self.keep.cpu())


def reference_prompt(editor, prompt_guidance: str | None = None) -> str:
    """What the photo was, in words: the prompt-guidance base, else the tune's base prompt or
    class noun (without the rare token the pretrained judge does not know), else empty."""
    import re

    if prompt_guidance:
        return prompt_guidance
    tc = editor.tune_cfg
    if tc.class_noun:
        return f"a photo of a {tc.class_noun}"
    if tc.base_prompt:
        return re.sub(
            rf"\s*(?<!\w){re.escape(tc.rare_token)}(?!\w)\s*", " ", tc.base_prompt
        ).strip()
    return ""


def best_of(
    editor,
    prompt: str,
    cfg,
    n: int,
    sweep: Sequence[dict] = (),
    mask=None,
    rc: RankConfig = RankConfig(),
    progress: bool = True,
):
    """Sample ``n`` seeds (cfg.seeds[0], +1, ...) at ``cfg`` or at each override in ``sweep``
    (e.g. [{"t0": 0.9}, {"t0": 1.0}]), rank every candidate: (EditResult of all, Ranking,
    labels)."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from .edit import EditResult

    if n < 1:
        raise ValueError(f"best-of needs n >= 1, got {n}")
    seeds = tuple(range(int(cfg.seeds[0]), int(cfg.seeds[0]) + n))
    cfgs = [replace(cfg, seeds=seeds, **s) for s in sweep] or [replace(cfg, seeds=seeds)]
    images, params, pixels, labels = [], [], [], []
    for c in tqdm(cfgs, desc="best-of", disable=not progress or len(cfgs) == 1):
        res = editor.edit(prompt, c, mask=mask, progress=progress)
        images += res.images
        params += res.params
        pixels.append(res.pixels)
        labels += [
            f"c{p['edit_config']['checkpoint']} t0={c.t0:g} w={p['edit_config']['cfg']:g} "
            f"seed {p['seed']}"
            for p in res.params
        ]
    pix = torch.cat(pixels)
    hw = tuple(pix.shape[-2:])
    edit_text = prompt  # the pretrained judge does not know the rare token
    judge = Judge(editor, edit_text, reference_prompt(editor, cfg.prompt_guidance), hw, rc)
    ranking = judge.rank(pix)
    for r, i in enumerate(ranking.order, 1):
        params[i]["best_of"] = {
            "rank": r,
            "of": len(params),
            "score": round(float(ranking.score[i]), 4),
            "edit_score": float(ranking.edit_score[i]),
            "lpips_outside_edit": round(float(ranking.lpips[i]), 5),
            "balance": rc.balance,
            "probes": rc.probes,
        }
    return EditResult(images, params, pix), ranking, labels
