"""The captioned world: scenes of 1-3 coloured shapes on a background, with per-image details
(jitter, rotation, texture) that no caption mentions, and natural captions with word-order
variety. Everything is seeded; ``numpy.random.Generator`` in, identical scenes out."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np

# name -> RGB in [0, 1]; pairwise >= ~0.3 apart so the oracle can name them after blur
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.96, 0.55, 0.08),
    "yellow": (0.94, 0.86, 0.12),
    "green": (0.16, 0.67, 0.24),
    "blue": (0.16, 0.31, 0.86),
    "purple": (0.55, 0.20, 0.71),
    "pink": (0.96, 0.51, 0.75),
    "brown": (0.51, 0.31, 0.16),
    "white": (0.96, 0.96, 0.96),
    "black": (0.10, 0.10, 0.10),
    "grey": (0.50, 0.50, 0.50),
}
OBJECT_COLOURS = tuple(c for c in PALETTE if c != "grey")
BACKGROUNDS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "star", "heart")
STYLES = ("filled", "outline", "striped")
SIZES = ("small", "large")
RADIUS = {"small": 6.0, "large": 9.5}  # world units (the canvas is 64 x 64 units)
# 3 x 3 slots: (row, col) -> name; the canvas is split in equal thirds
POSITIONS = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
SLOT = {v: k for k, v in POSITIONS.items()}
CELL_CENTERS = (12.0, 32.0, 52.0)
POS_PHRASES = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "center": ("in the center", "in the middle"),
}
for _p in ("top left", "top right", "bottom left", "bottom right"):
    POS_PHRASES[_p] = (f"at the {_p}", f"in the {_p} corner", f"in the {_p}")


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    style: str
    pos: str
    # per-image details, never captioned
    dx: float = 0.0  # position jitter (units)
    dy: float = 0.0
    scale: float = 1.0  # size jitter factor
    angle: float = 0.0  # rotation (degrees)
    stripe_phase: float = 0.0  # offset of the stripes (units)

    def attrs(self) -> tuple[str, str, str, str, str]:
        return (self.colour, self.shape, self.size, self.style, self.pos)

    def center(self) -> tuple[float, float]:
        r, c = SLOT[self.pos]
        return CELL_CENTERS[c] + self.dx, CELL_CENTERS[r] + self.dy

    def radius(self) -> float:
        return RADIUS[self.size] * self.scale


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...]
    grad: float = 0.0  # background gradient amplitude (additive, in [0, 1] units)
    grad_dir: float = 0.0  # gradient direction (radians)
    noise: float = 0.0  # std of the faint texture noise
    noise_seed: int = 0

    def key(self) -> tuple:
        """What a caption can say: background + the objects' attributes (order-free)."""
        return (self.background, tuple(sorted(o.attrs() for o in self.objects)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(**{**d, "objects": tuple(Obj(**o) for o in d["objects"])})


def is_held_out(scene: Scene, modulus: int = 16) -> bool:
    """A fixed 1/16 of all captionable scenes is never used in training (evaluation split)."""
    h = hashlib.md5(repr(scene.key()).encode()).digest()
    return int.from_bytes(h[:4], "little") % modulus == 0


def _free_slots(taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Slots not taken and not 4-adjacent to a taken one (objects never touch)."""
    out = []
    for s in POSITIONS:
        if any(s == t or abs(s[0] - t[0]) + abs(s[1] - t[1]) == 1 for t in taken):
            continue
        out.append(s)
    return out


def random_details(rng: np.random.Generator, o: Obj) -> Obj:
    return replace(
        o,
        dx=float(rng.uniform(-1.5, 1.5)),
        dy=float(rng.uniform(-1.5, 1.5)),
        scale=float(rng.uniform(0.9, 1.1)),
        angle=float(rng.uniform(-15, 15)),
        stripe_phase=float(rng.uniform(0, 5)),
    )


def sample_scene(
    rng: np.random.Generator, n_objects: int | None = None, split: str = "train"
) -> Scene:
    """A random scene; split "train" never returns a held-out scene, "eval" only those."""
    while True:
        n = n_objects or int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
        bg = str(rng.choice(BACKGROUNDS))
        taken: list[tuple[int, int]] = []
        objs = []
        for _ in range(n):
            free = _free_slots(taken)
            slot = free[int(rng.integers(len(free)))]
            taken.append(slot)
            colour = str(rng.choice([c for c in OBJECT_COLOURS if c != bg]))
            o = Obj(
                shape=str(rng.choice(SHAPES)),
                colour=colour,
                size=str(rng.choice(SIZES)),
                style=str(rng.choice(STYLES, p=[0.5, 0.25, 0.25])),
                pos=POSITIONS[slot],
            )
            objs.append(random_details(rng, o))
        scene = Scene(
            background=bg,
            objects=tuple(objs),
            grad=float(rng.uniform(0, 0.06)),
            grad_dir=float(rng.uniform(0, 2 * np.pi)),
            noise=float(rng.uniform(0.005, 0.02)),
            noise_seed=int(rng.integers(2**31)),
        )
        if is_held_out(scene) == (split == "eval"):
            return scene


@dataclass(frozen=True)
class CaptionStyle:
    """Probabilities of the caption variations used in training (all 0 = full canonical)."""

    drop_size: float = 0.15  # omit small/large
    drop_pos: float = 0.1  # omit the position phrase
    drop_bg: float = 0.15  # omit the background
    bg_first: float = 0.3  # "a grey background with ..." instead of "..., on a grey background"
    word_order: float = 0.3  # "striped red" vs "red striped", "outlined red" vs "red outline"
    solid: float = 0.1  # say "solid" for filled shapes
    extra: dict = field(default_factory=dict)


FULL = CaptionStyle(0, 0, 0, 0.3, 0.3, 0.1)  # every attribute present (evaluation captions)


def object_phrase(o: Obj, rng: np.random.Generator, cs: CaptionStyle = FULL) -> str:
    words = []
    if rng.random() >= cs.drop_size:
        words.append(o.size)
    swap = rng.random() < cs.word_order
    if o.style == "filled":
        words += (["solid"] if rng.random() < cs.solid else []) + [o.colour]
    elif o.style == "outline":
        words += ["outlined", o.colour] if swap else [o.colour, "outline"]
    else:
        words += ["striped", o.colour] if swap else [o.colour, "striped"]
    words.append(o.shape)
    phrase = "a " + " ".join(words)
    if rng.random() >= cs.drop_pos:
        phrase += " " + str(rng.choice(POS_PHRASES[o.pos]))
    return phrase


def caption(scene: Scene, rng: np.random.Generator, cs: CaptionStyle = FULL) -> str:
    objs = list(scene.objects)
    rng.shuffle(objs)
    parts = [object_phrase(o, rng, cs) for o in objs]
    if len(parts) == 1:
        body = parts[0]
    elif len(parts) == 2:
        body = f"{parts[0]} and {parts[1]}"
    else:
        body = ", ".join(parts[:-1]) + f" and {parts[-1]}"
    if rng.random() < cs.drop_bg:
        return body
    if rng.random() < cs.bg_first:
        return f"a {scene.background} background with {body}"
    prep = str(rng.choice(["on", "with", "against"]))
    return f"{body}, {prep} a {scene.background} background"


def training_caption(scene: Scene, rng: np.random.Generator, p_empty: float = 0.1) -> str:
    """Caption with drop-outs, and 10% empty captions for classifier-free guidance."""
    if rng.random() < p_empty:
        return ""
    return caption(scene, rng, CaptionStyle())
