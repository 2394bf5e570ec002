"""An auxiliary training loss that makes the text encoder keep *where* each object is.

Why (README, "Why position fails"): trained jointly from scratch, the text encoder learned to
map "on the left" and "on the right" to nearly the same token states (0.29 apart, norm ~9.5),
and the UNet then gets no gradient that would bring the difference back. Stable Diffusion
avoids this by freezing a text encoder pretrained elsewhere; here a small read-out asks the
text encoder's states, directly, for the scene's layout: for each of the 9 position slots, the
colour and the shape of the object there (or none).

The read-out is made unable to amplify small differences (queries of fixed norm, cosine
classifiers with a fixed temperature), so only a text encoder whose states really separate
the slots can satisfy it. It is training-only: nothing of it is exported.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..world.scene import (
    OBJECT_COLOURS,
    POSITIONS,
    SHAPES,
    CaptionStyle,
    Scene,
    caption,
    sample_scene,
)

SLOTS = tuple(POSITIONS.values())  # 9 slot names, row-major
COLOUR_CLASSES = ("none",) + OBJECT_COLOURS  # class 0 = no object in the slot
SHAPE_CLASSES = ("none",) + SHAPES
# training captions, except that every object's position is said (the target needs it)
LAYOUT_STYLE = CaptionStyle(drop_pos=0.0)
TEMPERATURE = 10.0  # cosine logits in [-10, 10]: sharp enough, no amplification to learn


def layout_caption(scene: Scene, rng: np.random.Generator) -> tuple[str, list[int], list[int]]:
    """A caption naming every position, with its targets: per slot (9,), colour and shape
    class ids (0 = empty)."""
    colours, shapes = [0] * len(SLOTS), [0] * len(SLOTS)
    for o in scene.objects:
        s = SLOTS.index(o.pos)
        colours[s] = COLOUR_CLASSES.index(o.colour)
        shapes[s] = SHAPE_CLASSES.index(o.shape)
    return caption(scene, rng, LAYOUT_STYLE), colours, shapes


def layout_batch(tok, rng: np.random.Generator, n: int, split: str = "train"):
    """n fresh scenes' layout captions as (token ids (n, 77), colour ids (n, 9), shape ids
    (n, 9))."""
    caps, cols, shps = zip(*(layout_caption(sample_scene(rng, split=split), rng) for _ in range(n)))
    ids = tok(
        list(caps), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    return ids, torch.tensor(cols), torch.tensor(shps)


class LayoutHead(torch.nn.Module):
    """Slot queries attend over the text states (as the UNet's cross-attention does) and a
    cosine classifier names the colour and the shape in each slot."""

    def __init__(self, width: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)

        # the forward pass normalises every row, so the init scale only sets how fast Adam
        # turns them: std 0.02 (|row| ~0.2) turns them ~50x faster than unit-std rows
        def rows(n: int) -> torch.nn.Parameter:
            return torch.nn.Parameter(0.02 * torch.randn(n, width, generator=g))

        self.queries = rows(len(SLOTS))
        self.colour = rows(len(COLOUR_CLASSES))
        self.shape = rows(len(SHAPE_CLASSES))

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states (B, 77, width) -> colour logits (B, 9, 11), shape logits (B, 9, 6)."""
        d = states.shape[-1]
        # |q| = sqrt(d) and the encoder's final layer norm keeps |state| ~ sqrt(d): attention
        # logits stay within about +-sqrt(d) whatever the head learns
        q = F.normalize(self.queries.float(), dim=-1) * d**0.5
        h = states.float()
        att = torch.softmax(torch.einsum("sd,btd->bst", q, h) / d**0.5, dim=-1)  # (B, 9, 77)
        pooled = F.normalize(torch.einsum("bst,btd->bsd", att, h), dim=-1)  # (B, 9, d)

        def cos(w: torch.Tensor) -> torch.Tensor:
            return TEMPERATURE * pooled @ F.normalize(w.float(), dim=-1).T

        return cos(self.colour), cos(self.shape)


def layout_loss(
    logits: tuple[torch.Tensor, torch.Tensor], colours: torch.Tensor, shapes: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the colour and the shape per slot, for the head's (colour, shape) logits
    and targets (B, 9) class ids; occupied and empty slots weigh half each (7 of 9 slots are
    empty on average: unbalanced, the read-out learns "none" everywhere and sends the text
    encoder no position signal)."""
    lc, ls = logits
    per = F.cross_entropy(lc.flatten(0, 1), colours.flatten(), reduction="none")
    per = per + F.cross_entropy(ls.flatten(0, 1), shapes.flatten(), reduction="none")  # (B*9,)
    occ = (colours > 0).flatten().float()
    emp = 1 - occ
    return 0.5 * (
        (per * occ).sum() / occ.sum().clamp(min=1) + (per * emp).sum() / emp.sum().clamp(min=1)
    )


@torch.no_grad()
def layout_accuracy(
    logits: tuple[torch.Tensor, torch.Tensor], colours: torch.Tensor, shapes: torch.Tensor
) -> float:
    """Fraction of occupied slots whose colour and shape are both read correctly."""
    lc, ls = logits
    occ = colours > 0
    ok = (lc.argmax(-1) == colours) & (ls.argmax(-1) == shapes)
    return float(ok[occ].float().mean())
