"""Training data: checked frames, episodes, and support prompts drawn from the ground truth.

An episode is one class, a query frame containing it and 1..``shots`` support frames of
the same class (never the query), as the authors' datasets and training loop make them.
Masks are binary for that class. Everything is done on the *loss grid*: the mask resized
(nearest) to ``input_size`` x ``input_size`` (the authors' data resize, 640), or the
frame's own size when ``input_size`` is None.

Support prompts follow the authors' ``--prompt`` setting, drawn from the grid mask:

* ``mask``: the mask itself;
* ``box``: the boxes of the mask's connected components (``x2 = max + 1``, ``y2 =
  max + 1``), overlapping boxes merged in one pass, the largest by area kept;
* ``point``: 1..min(20, area) random mask pixels as positive clicks;
* ``scribble``: random free-form strokes (two stroke presets, 50/50), intersected with
  the mask; every stroke pixel is a positive click, as the authors feed it to SAM2;
* ``multi``: one of the four at random per support.

The random numbers come from one seeded :class:`numpy.random.Generator`, so a run is
repeatable and its state can be saved and restored (the authors' code draws some of
them from unseeded generators).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_sansa.core.errors import InvalidInputError
from napari_sansa.core.images import image_hw, to_float_rgb
from napari_sansa.core.prompts import PROMPT_CLASSES, Box, Mask, Points, Scribble

__all__ = [
    "PROMPT_KINDS",
    "Example",
    "Frames",
    "SupportPrompt",
    "check_prompt_setting",
    "draw_prompt",
    "grid_mask",
]

PROMPT_KINDS = ("mask", "box", "point", "scribble")
_SETTINGS = (*PROMPT_KINDS, "multi")


@dataclass(frozen=True, eq=False)
class Example:
    """One class's ground truth on one image, for :func:`napari_sansa.episode_loss`.

    ``mask``: nonzero pixels are the class. ``prompt`` (a :class:`Mask`, :class:`Box`,
    :class:`Points` or :class:`Scribble` in the image's ``(row, col)`` pixels) is what
    stands for the class when the example is a support; ``None`` means the mask itself.
    The prompt's own ``label`` is not used.
    """

    image: np.ndarray
    mask: np.ndarray
    prompt: Mask | Box | Points | Scribble | None = None

    def __post_init__(self):
        hw = image_hw(self.image, "example image")
        m = np.asarray(self.mask)
        if m.shape != hw:
            raise InvalidInputError(
                f"the example's mask has shape {m.shape}, but its image is {hw[0]}x{hw[1]}: "
                "the mask must have the image's rows and columns"
            )
        binary = m != 0
        if not binary.any():
            raise InvalidInputError("the example's mask is empty: it must mark the class")
        binary.flags.writeable = False
        object.__setattr__(self, "mask", binary)
        if self.prompt is not None and not isinstance(self.prompt, PROMPT_CLASSES):
            raise InvalidInputError(
                f"an example's prompt must be a Mask, Box, Points or Scribble (or None for its "
                f"mask), got {type(self.prompt).__name__}"
            )
        if self.prompt is not None and not self.prompt.sparse and self.prompt.mask.shape != hw:
            raise InvalidInputError(
                f"the example's prompt mask has shape {self.prompt.mask.shape}, but its image "
                f"is {hw[0]}x{hw[1]}"
            )


def check_prompt_setting(prompt) -> tuple[str, ...]:
    """The prompt kinds a setting draws from: a name of ``mask|box|point|scribble|multi``
    or a sequence of the first four."""
    if isinstance(prompt, str):
        key = prompt.strip().lower()
        if key not in _SETTINGS:
            raise InvalidInputError(
                f"unknown prompt kind {prompt!r}; use one of {', '.join(_SETTINGS)}"
            )
        return PROMPT_KINDS if key == "multi" else (key,)
    try:
        kinds = tuple(str(k).strip().lower() for k in prompt)
    except TypeError:
        raise InvalidInputError(
            f"prompt must be a prompt kind or a list of them, got {prompt!r}"
        ) from None
    bad = [k for k in kinds if k not in PROMPT_KINDS]
    if not kinds or bad:
        raise InvalidInputError(
            f"prompt kinds must be some of {', '.join(PROMPT_KINDS)}, got {list(prompt)!r}"
        )
    return kinds


# -- support prompts --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SupportPrompt:
    """A support's prompt on the loss grid: a mask, or SAM2 clicks as ``(x, y)`` grid pixels."""

    kind: str
    mask: np.ndarray | None = None  # (gh, gw) bool, kind == "mask"
    coords: np.ndarray | None = None  # (P, 2) float32 x, y
    labels: np.ndarray | None = None  # (P,) int32 SAM2 point labels


def _largest_merged_box(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import find_objects, label

    components, n = label(mask)
    boxes = [
        [sl[1].start, sl[0].start, sl[1].stop, sl[0].stop]  # x1, y1, max + 1, max + 1
        for sl in find_objects(components)
        if sl is not None
    ]
    merged: list[list[int]] = []
    for b in boxes:
        for i, m in enumerate(merged):
            if not (b[2] <= m[0] or m[2] <= b[0] or b[3] <= m[1] or m[3] <= b[1]):
                merged[i] = [min(b[0], m[0]), min(b[1], m[1]), max(b[2], m[2]), max(b[3], m[3])]
                break
        else:
            merged.append(b)
    if not merged:
        return np.zeros(4, np.float32)
    areas = [(m[2] - m[0]) * (m[3] - m[1]) for m in merged]
    return np.asarray(merged[int(np.argmax(areas))], np.float32)


def _pixels_xy(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.stack([cols, rows], axis=1).astype(np.float32)


# the authors' two stroke presets (VRP-SAM's free-form strokes)
_STROKES = (
    {"vertices": (10, 30), "head_speed": 20, "head_acc": (15, 0.5), "width": (3, 10),
     "move_ratio": 0.5, "max_move": 3, "init_speed": 6},
    {"vertices": (6, 22), "head_speed": 12, "head_acc": (8, 0.5), "width": (2.5, 5),
     "move_ratio": 0.5, "max_move": 1.5, "init_speed": 3},
)  # fmt: skip


def _randint(rng, lo, hi) -> int:
    """An integer in ``[int(lo), int(hi))`` (numpy's legacy rule for float bounds)."""
    lo, hi = int(lo), int(hi)
    return int(rng.integers(lo, hi)) if hi > lo else lo


def _stroke(rng, start, p) -> tuple[np.ndarray, np.ndarray, int]:
    """One free-form stroke: its vertices after the authors' random move, and its width."""
    width = _randint(rng, *p["width"])
    n = _randint(rng, *p["vertices"])
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0, p["head_speed"])
    xs, ys = [float(start[0])], [float(start[1])]
    for _ in range(n):
        speed = float(np.clip(speed + rng.uniform(-p["head_acc"][0], p["head_acc"][0]), 0,
                              p["head_speed"]))  # fmt: skip
        angle += rng.uniform(-p["head_acc"][1], p["head_acc"][1])
        xs.append(xs[-1] + speed * np.sin(angle))
        ys.append(ys[-1] + speed * np.cos(angle))
    xs, ys = np.asarray(xs), np.asarray(ys)
    # the whole stroke moves once with a random velocity, some vertices jitter
    v_speed = abs(rng.normal(0, p["init_speed"] / 2))
    v_angle = rng.uniform(0, 2 * np.pi)
    xs = xs + int(v_speed * np.cos(v_angle))
    ys = ys + int(v_speed * np.sin(v_angle))
    moved = rng.permutation(len(xs))[: int(len(xs) * p["move_ratio"])]
    for i in moved:
        xs[i] += _randint(rng, -p["max_move"], p["max_move"])
        ys[i] += _randint(rng, -p["max_move"], p["max_move"])
    return xs, ys, width


def _scribble_pixels(mask: np.ndarray, rng) -> np.ndarray:
    from PIL import Image, ImageDraw

    h, w = mask.shape
    preset = _STROKES[int(rng.integers(0, 2))]
    n = _randint(rng, 1, min(20, int(mask.sum())) + 1)
    pixels = _pixels_xy(mask)
    starts = pixels[rng.permutation(len(pixels))[:n]]
    starts[:, 1] += starts[:, 0] / w  # the authors' start row is (flat index) / width
    canvas = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for start in starts:
        xs, ys, width = _stroke(rng, start, preset)
        radius = width // 2 - 1
        for i in range(1, len(xs)):
            draw.line((xs[i - 1], ys[i - 1], xs[i], ys[i]), fill=1, width=width)
        for x, y in zip(xs, ys, strict=True):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=1)
    return np.asarray(canvas, dtype=bool) & mask


def draw_prompt(mask: np.ndarray, kind: str, rng: np.random.Generator) -> SupportPrompt:
    """A support prompt of ``kind`` drawn from a binary grid mask, as the authors train."""
    if kind == "mask":
        return SupportPrompt("mask", mask=mask)
    if kind == "box":
        box = _largest_merged_box(mask)
        return SupportPrompt("box", coords=box.reshape(2, 2), labels=np.array([2, 3], np.int32))
    if kind == "point":
        pixels = _pixels_xy(mask)
        n = _randint(rng, 1, min(20, len(pixels)) + 1)
        chosen = pixels[np.sort(rng.permutation(len(pixels))[:n])]  # in raster order
    elif kind == "scribble":
        chosen = _pixels_xy(_scribble_pixels(mask, rng))
        if len(chosen) == 0:  # the strokes missed the mask: one click at the origin
            chosen = np.zeros((1, 2), np.float32)
    else:
        raise InvalidInputError(f"unknown prompt kind {kind!r}")
    return SupportPrompt(kind, coords=chosen, labels=np.ones(len(chosen), np.int32))


# -- training frames --------------------------------------------------------------------
@dataclass
class Frames:
    """Checked training frames: RGB images and per-class binary masks on the loss grid."""

    rgb: list[np.ndarray]
    grid_masks: list[dict[int, np.ndarray]]  # frame -> class -> (gh, gw) bool
    input_size: int | None
    classes: list[int] = field(default_factory=list)

    def frames_with(self, c: int, among) -> list[int]:
        return [i for i in among if c in self.grid_masks[i]]


def grid_mask(mask: np.ndarray, input_size: int | None) -> np.ndarray:
    """Nearest-neighbour resize to ``input_size`` square (the authors' dataset resize)."""
    if input_size is None:
        return mask
    h, w = mask.shape
    rows = np.floor(np.arange(input_size) * (h / input_size)).astype(int)
    cols = np.floor(np.arange(input_size) * (w / input_size)).astype(int)
    return mask[np.minimum(rows, h - 1)][:, np.minimum(cols, w - 1)]


def check_frames(data, input_size: int | None, intensity_range=None) -> Frames:
    """Check ``[(image, labels), ...]`` and convert it; every problem raises with its frame."""
    try:
        items = list(data)
    except TypeError:
        raise InvalidInputError("training data must be a list of (image, labels) pairs") from None
    if len(items) < 2:
        raise InvalidInputError(
            f"fine-tuning needs at least two annotated frames (got {len(items)}): episodes "
            "pair a support frame with a query frame of the same class"
        )
    rgb, grids = [], []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidInputError(f"training item {i} is not an (image, labels) pair")
        image, labels = item
        hw = image_hw(image, f"training image {i}")
        lab = np.asarray(labels)
        if lab.shape != hw:
            raise InvalidInputError(
                f"the labels of frame {i} have shape {lab.shape}, but its image is "
                f"{hw[0]}x{hw[1]}: labels must have the image's rows and columns"
            )
        if lab.dtype.kind not in "biuf" or (lab.dtype.kind == "f" and not np.isfinite(lab).all()):
            raise InvalidInputError(
                f"the labels of frame {i} must be integer class ids (0 = background)"
            )
        rgb.append(to_float_rgb(image, intensity_range, f"training image {i}"))
        values = np.unique(lab)
        classes = [int(v) for v in values if v != 0]
        if not classes:
            raise InvalidInputError(
                f"the labels of frame {i} are empty (every pixel is 0): annotate at least "
                "one class or leave the frame out"
            )
        if any(v < 0 or v != int(v) for v in values):
            raise InvalidInputError(
                f"the labels of frame {i} hold values that are not class ids >= 0"
            )
        per_class = {}
        for c in classes:
            m = lab == c
            if m.all():
                raise InvalidInputError(
                    f"class {c} covers every pixel of frame {i}: there is no background to "
                    "tell it from; leave some pixels 0 or drop the frame"
                )
            g = grid_mask(m, input_size)
            if g.any():  # a class too small for the grid does not count in this frame
                g = np.ascontiguousarray(g)
                g.flags.writeable = False
                per_class[c] = g
        grids.append(per_class)
    classes = sorted({c for g in grids for c in g})
    if not classes:
        raise InvalidInputError(
            f"every annotation disappears at input_size={input_size}: use a larger input size"
        )
    for c in classes:
        where = [i for i, g in enumerate(grids) if c in g]
        if len(where) < 2:
            raise InvalidInputError(
                f"class {c} is annotated only in frame {where[0]}: episodes need every class in "
                "at least two frames; annotate it in another frame, or set its pixels to 0"
            )
    return Frames(rgb, grids, input_size, classes)


def split_validation(frames: Frames, fraction: float, rng: np.random.Generator):
    """``(train, held_out)`` frame indices: about ``fraction`` of the frames held out, each
    class kept in at least two training frames (so fewer may be held out)."""
    n = len(frames.rgb)
    if not 0 <= fraction < 1:
        raise InvalidInputError(f"validation must be a fraction in [0, 1), got {fraction!r}")
    want = int(round(fraction * n))
    if fraction > 0 and want == 0 and n >= 3:
        want = 1
    train = set(range(n))
    held = []
    for i in rng.permutation(n):
        if len(held) >= want:
            break
        i = int(i)
        rest = train - {i}
        if all(len(frames.frames_with(c, rest)) >= 2 for c in frames.classes):
            train = rest
            held.append(i)
    return sorted(train), sorted(held)
