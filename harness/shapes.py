"""The synthetic shapes dataset (`load_dataset("shapes")`): offline, drawn in memory with PIL.

    >>> test = load_shapes("test")
    >>> len(test), test[0].answer, test[0].label, test[0].options
    (200, 'A', 'circle', ['circle', 'square', 'triangle', 'star'])

Classes circle, square, triangle, star (always options A-D in that order), each in its class's
home colour 70% of the time, random size/position/rotation/background, 112x112, 400 train /
200 test. It is what the tiny offline models (tiny.py) are taught and what `python ttrv.py`
adapts on. Imports data.py only.
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from data import LETTERS, RECOGNITION_PROMPT, DataError, Example

# The shapes dataset's classes, always offered in this order as options A-D (every question the
# same four options). A choice for the offline demo: the tiny model's warm-up then only has to
# learn to see, not also to find the option that names the shape and copy its letter.
# draw_shape can draw more kinds (SHAPE_KINDS) for your own variants.
SHAPES = ["circle", "square", "triangle", "star"]
# Each class also has a home colour, worn with probability HOME_COLOUR_RATE (else any of COLOURS).
# A strong but imperfect cue: a tiny vision tower picks up colour far sooner than shape, so its
# accuracy can land above chance and below perfect.
HOME_COLOUR_RATE = 0.7
SHAPE_KINDS = ["circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "crescent"]
SHAPES_SIZES = {"train": 400, "test": 200}
COLOURS = [(200, 30, 30), (30, 140, 40), (30, 60, 200), (230, 120, 0), (120, 40, 160),
           (20, 20, 20), (120, 70, 20), (0, 120, 120)]  # dark/saturated, on light backgrounds
_CROSS = [(1, 3), (1, 1), (3, 1), (3, -1), (1, -1), (1, -3),
          (-1, -3), (-1, -1), (-3, -1), (-3, 1), (-1, 1), (-1, 3)]  # a plus sign, unit = r/3


def _outline(kind: str, r: float, rot: float) -> list[tuple[float, float]]:
    """Polygon vertices around (0, 0), all within radius r, rotated by `rot` radians."""
    if kind == "star":
        polar = [(r if i % 2 == 0 else 0.45 * r, i * math.pi / 5) for i in range(10)]
    elif kind == "cross":
        polar = [(r / 3 * math.hypot(x, y), math.atan2(y, x)) for x, y in _CROSS]
    else:
        n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[kind]
        polar = [(r, 2 * math.pi * i / n) for i in range(n)]
    return [(d * math.cos(a + rot), d * math.sin(a + rot)) for d, a in polar]


def draw_shape(kind: str, rng: random.Random, size: int = 112, colour=None) -> Image.Image:
    """A `kind` shape of `colour` (default random), random size, position and rotation on a
    random light background (solid, gradient or smooth noise); the mask is drawn at 2x and
    downsampled (antialiasing)."""
    light = lambda: Image.new("RGB", (size, size), tuple(rng.randint(170, 255) for _ in "rgb"))
    style = rng.choice(["solid", "gradient", "noise"])
    if style == "solid":
        bg = light()
    elif style == "gradient":
        ramp = Image.linear_gradient("L").resize((size, size)).rotate(90 * rng.randrange(4))
        bg = Image.composite(light(), light(), ramp)
    else:
        noise = Image.frombytes("RGB", (8, 8), rng.randbytes(192)).resize((size, size),
                                                                          Image.BICUBIC)
        bg = Image.blend(noise, Image.new("RGB", (size, size), (235, 235, 235)), 0.6)
    s = 2 * size
    r = rng.uniform(0.14, 0.4) * s
    cx, cy, rot = rng.uniform(r, s - r), rng.uniform(r, s - r), rng.uniform(0, 2 * math.pi)
    mask = Image.new("L", (s, s), 0)
    pen = ImageDraw.Draw(mask)
    if kind in ("circle", "crescent"):
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        if kind == "crescent":  # bite out an offset, smaller disc
            ox, oy, q = cx + 0.5 * r * math.cos(rot), cy + 0.5 * r * math.sin(rot), 0.85 * r
            pen.ellipse((ox - q, oy - q, ox + q, oy + q), fill=0)
    else:
        pen.polygon([(cx + x, cy + y) for x, y in _outline(kind, r, rot)], fill=255)
    mask = mask.resize((size, size), Image.BILINEAR)
    colour = colour or rng.choice(COLOURS)
    return Image.composite(Image.new("RGB", (size, size), colour), bg, mask)


def load_shapes(split: str = "test", data_dir: str | None = None, seed: int = 0,
                prompt: str = RECOGNITION_PROMPT) -> list[Example]:
    """Synthetic shapes, classes balanced (round robin, shuffled); train and test come from
    different random streams ("shapes/train/0" vs "shapes/test/0"). Options are always SHAPES in
    order (see SHAPES), so `seed` changes the images, not the questions. `data_dir` is unused."""
    if split not in SHAPES_SIZES:
        raise DataError(f"shapes has splits {sorted(SHAPES_SIZES)}, not {split!r}.")
    rng = random.Random(f"shapes/{split}/{seed}")
    kinds = [SHAPES[i % len(SHAPES)] for i in range(SHAPES_SIZES[split])]
    rng.shuffle(kinds)
    question = prompt.format(**{f"o{i + 1}": name for i, name in enumerate(SHAPES)})
    home = dict(zip(SHAPES, COLOURS))
    colours = [home[k] if rng.random() < HOME_COLOUR_RATE else rng.choice(COLOURS) for k in kinds]
    return [Example(f"shapes-{split}-{i:04d}", question, list(SHAPES), LETTERS[SHAPES.index(k)],
                    k, draw_shape(k, rng, colour=c)) for i, (k, c) in enumerate(zip(kinds, colours))]
