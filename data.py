"""The question format for TTRV (paper section 4 and Appendix C), and the datasets that need no hub.

Every dataset becomes a list of `Example`s: an image (loaded lazily), the prompt text shown with
it, the lettered options and the correct letter. TTRV adapts on a few of them with their labels
stripped (`draw_adaptation_set`) and evaluates on all of them.

    >>> test = load_shapes("test")                       # offline, drawn with PIL
    >>> adapt = draw_adaptation_set(test, k=20, seed=0)  # unlabeled: answer and label are None
    >>> test[0].answer, test[0].label, adapt[0].answer
    ('A', 'circle', None)

This module imports no other project module. Above it: hub.py (generic hub loading) and
presets.py (the paper's 16 named benchmarks, RESISC45 among them, and `load_dataset`, the one
dispatcher that knows every dataset name).
  shapes       synthetic: circle, square, triangle, star (always options A-D in that order),
               each in its class's home colour 70% of the time, random size/position/rotation/
               background, 112x112, 400 train / 200 test, drawn in memory (~0.4 s for both).
  folder       one sub-folder of images per class (>= 4 classes); every image is one question.
  jsonl        ready-made questions, one {"image", "question", "options", "answer"} per line.

Choices:
  - Loading never opens an image; `Example.image()` decodes on demand and raises `DataError`
    naming a missing or corrupt file (nothing is skipped silently). `drop_large_images` reads
    only image headers.
  - A zip is opened once per (process, path) and the handle cached (re-opened after a fork), so
    4,500 reads do not re-parse its 31,500-entry directory; an `Example` stores only the
    (zip path, member) pair.
  - Questions are fixed by `seed`: one `random.Random(seed)` per dataset consumed in a fixed order
    (classes alphabetical, images ascending), so base and adapted model get the same questions.
  - Option text = class folder name with spaces for underscores ("golf course"; `spell=str`
    keeps the underscores, as the official test prompts do); `label` is that same text, so
    `label == options[LETTERS.index(answer)]` always.
  - A jsonl question is shown verbatim (Appendix C has a different prompt per benchmark); its
    options are not appended to it.
  - Free-form (counting) questions have no options; `count_score` scores them.
Left out: image preprocessing (the model's processor resizes and normalises).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import string
import zipfile
import zlib
from typing import Any

from PIL import Image, ImageDraw


class DataError(Exception):
    """Something wrong with data a user pointed at; the message says what to do."""


# Appendix C verbatim, minus its leading "<image> \n ": the model's chat template places the image.
RECOGNITION_PROMPT = (
    "Look at the given image and identify what it shows. Choose the correct answer from the "
    "options below and respond with only the corresponding option letter (A, B, C, or D). Do not "
    "include any explanation or extra text. \n Options:\nA. {o1}\nB. {o2}\nC. {o3}\nD. {o4}")
DTD_PROMPT = RECOGNITION_PROMPT.replace("what it shows", "what texture it shows")
PROMPTS = {"dtd": DTD_PROMPT}  # dataset name -> template; any other dataset: RECOGNITION_PROMPT
LETTERS = string.ascii_uppercase


@dataclasses.dataclass
class Example:
    """One multiple-choice question about one image. `source`: a file path, a
    (zip path, member) pair, or a PIL image.

    >>> ex = Example("x", "Q", ["cat", "dog"], "B", "dog", Image.new("RGB", (8, 8)))
    >>> ex.image().size, ex.options[LETTERS.index(ex.answer)] == ex.label
    ((8, 8), True)
    """

    id: str
    question: str
    options: list[str]
    answer: str | None
    label: str | None
    source: Any = dataclasses.field(repr=False)

    def image(self) -> Image.Image:
        """The image as RGB; `DataError` naming the file if it cannot be read."""
        src = self.source
        if isinstance(src, Image.Image):
            return src.convert("RGB")  # a copy
        where = f"{src[1]} in {src[0]}" if isinstance(src, tuple) else str(src)
        try:
            img = Image.open(io.BytesIO(_open_zip(src[0]).read(src[1]))
                             if isinstance(src, tuple) else src)
            img.load()
            return img.convert("RGB")
        except (OSError, EOFError, KeyError, ValueError, zlib.error, zipfile.BadZipFile,
                Image.DecompressionBombError) as err:
            raise DataError(f"Cannot read image {where} ({type(err).__name__}: {err}); replace or "
                            "delete that file (or re-download the dataset) and run again.") from err


def strip_labels(example: Example) -> Example:
    """A copy with `answer` and `label` set to None, so adaptation can never read them."""
    return dataclasses.replace(example, answer=None, label=None)


_ZIPS: dict[tuple[int, str], zipfile.ZipFile] = {}


def _open_zip(path: str) -> zipfile.ZipFile:
    key = (os.getpid(), os.path.abspath(path))  # pid: a forked worker opens its own handle
    if key not in _ZIPS:
        try:
            _ZIPS[key] = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as err:
            raise DataError(f"{path} is not a readable zip archive ({err}); it is probably "
                            "incomplete: delete it and download it again.") from err
    return _ZIPS[key]


# ------------------------------------------------------------------------- multiple choice

def display_name(class_name: str) -> str:
    """Option text of a class folder name: "golf_course" -> "golf course"."""
    return class_name.replace("_", " ")


def make_choice_question(label: str, classes: list[str], rng: random.Random,
                         prompt: str = RECOGNITION_PROMPT, num_options: int = 4,
                         spell=display_name) -> tuple[str, list[str], str]:
    """The true class plus `num_options - 1` distinct distractors drawn uniformly from the other
    classes, the true option's slot uniform; returns (question text, options, answer letter).
    `spell` turns a class name into option text (`str` keeps "golf_course", as the official
    test prompts do).

    >>> classes = ["beach", "forest", "golf_course", "lake", "river"]
    >>> q, opts, ans = make_choice_question("golf_course", classes, random.Random(0))
    >>> len(set(opts)), opts[LETTERS.index(ans)], q.endswith("\\nD. " + opts[3])
    (4, 'golf course', True)
    """
    fields = {f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None}
    if fields != {f"o{i + 1}" for i in range(num_options)}:
        raise DataError(f"The prompt template has fields {sorted(fields)}, but {num_options} "
                        f"options need exactly o1..o{num_options}; fix the template.")
    others = [c for c in dict.fromkeys(classes) if c != label]
    if label not in classes or len(others) < num_options - 1:
        raise DataError(f"A {num_options}-way question needs its label {label!r} among at least "
                        f"{num_options} distinct classes, got {len(others) + 1}; add classes.")
    options = [spell(c) for c in rng.sample(others, num_options - 1)]
    slot = rng.randrange(num_options)
    options.insert(slot, spell(label))
    return prompt.format(**{f"o{i + 1}": o for i, o in enumerate(options)}), options, LETTERS[slot]


def _questions(items: list[tuple[str, str, Any]], classes: list[str], seed: int,
               prompt: str, spell=display_name) -> list[Example]:
    """(id, class, source) triples -> Examples, one `random.Random(seed)` used in list order."""
    rng, out = random.Random(seed), []
    for ex_id, cls, source in items:
        question, options, answer = make_choice_question(cls, classes, rng, prompt, spell=spell)
        out.append(Example(ex_id, question, options, answer, spell(cls), source))
    return out


def is_counting(example: Example) -> bool:
    """A free-form (numeric) question: no options; `answer` is the true count as text."""
    return not example.options


def count_score(prediction: float | None, truth: float) -> float:
    """1 - symmetric percentage error of one count, in [0, 1]: 1 - |p - t| / (|p| + |t|); 0 with
    no prediction (None or NaN), 1 when both are 0. A dataset's score is the mean, 1 - sMAPE (the
    CAPTURe authors' compute_smape.py also counts a missing answer as 100% error)."""
    if prediction is None or math.isnan(prediction):
        return 0.0
    p, t = float(prediction), float(truth)
    return 1.0 if p == t else 1.0 - abs(p - t) / (abs(p) + abs(t))


# ------------------------------------------------------------------------- synthetic shapes

# The shapes dataset's classes, always offered in this order as options A-D (every question the
# same four options). A choice for the offline demo: the tiny model's one-minute warm-up then only
# has to learn to see; with shuffled options it must also learn to find the option that names
# the shape and copy its letter, which a 2-layer model did not learn in minutes. draw_shape can
# draw more kinds (SHAPE_KINDS) for your own variants.
SHAPES = ["circle", "square", "triangle", "star"]
# Each class also has a home colour, worn with probability HOME_COLOUR_RATE (else any of COLOURS).
# A strong but imperfect cue: the tiny model (a 32-wide, 2-layer vision tower) learns colours in
# seconds but shapes only slowly, so its accuracy lands well above chance and well below perfect.
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


# ------------------------------------------------------------------------- your own data

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_folder(split: str = "test", data_dir: str | None = None, seed: int = 0,
                prompt: str = RECOGNITION_PROMPT, spell=display_name) -> list[Example]:
    """`data_dir/<class>/<image>`: classes and images sorted by name; `split` is ignored."""
    if not data_dir or not os.path.isdir(data_dir):
        raise DataError(f"Folder dataset {data_dir!r} is not a directory; use folder:PATH with "
                        "one sub-folder of images per class.")
    classes = sorted(d for d in os.listdir(data_dir)
                     if not d.startswith(".") and os.path.isdir(os.path.join(data_dir, d)))
    if len(classes) < 4:
        raise DataError(f"{data_dir} has {len(classes)} class folders, but 4-way questions need "
                        "at least 4; add class sub-folders.")
    items = []
    for cls in classes:
        files = sorted(f for f in os.listdir(os.path.join(data_dir, cls))
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"Class folder {os.path.join(data_dir, cls)} holds no images "
                            f"({' '.join(IMAGE_EXTENSIONS)}); add some or remove the folder.")
        items += [(f"{cls}/{f}", cls, os.path.join(data_dir, cls, f)) for f in files]
    return _questions(items, classes, seed, prompt, spell)


def _answer_letter(answer: Any, options: list[str]) -> str:
    """A letter ("c" or "C") or the text of exactly one option -> its letter."""
    text = str(answer).strip()
    if len(text) == 1 and text.upper() in LETTERS[:len(options)]:
        return text.upper()
    hits = [i for i, o in enumerate(options) if o.strip() == text]
    if len(hits) != 1:
        raise ValueError(f"answer {answer!r} is neither an option letter nor exactly one option")
    return LETTERS[hits[0]]


def load_jsonl(split: str = "test", data_dir: str | None = None, seed: int = 0,
               prompt: str = RECOGNITION_PROMPT) -> list[Example]:
    """One question per line, its text shown verbatim, e.g. {"image": "img/1.png", "question":
    "...", "options": ["cat", "dog"], "answer": "B"} (optional "id"); image paths relative to
    the file's folder or absolute. `split`, `seed` and `prompt` are ignored."""
    if not data_dir or not os.path.isfile(data_dir):
        raise DataError(f"JSONL dataset {data_dir!r} is not a file; use jsonl:PATH/TO/FILE.jsonl.")
    base, out = os.path.dirname(os.path.abspath(data_dir)), []
    with open(data_dir, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                options = row["options"]
                if not (isinstance(options, list) and 2 <= len(options) <= 26
                        and all(isinstance(o, str) for o in options)):
                    raise ValueError("options must be a list of 2 to 26 strings")
                letter = _answer_letter(row["answer"], options)
                path = os.path.join(base, str(row["image"]))
                if not os.path.isfile(path):
                    raise ValueError(f"image {path} does not exist")
                out.append(Example(str(row.get("id", f"line{n}")), str(row["question"]), options,
                                   letter, options[LETTERS.index(letter)], path))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise DataError(f"{data_dir} line {n} is invalid ({type(err).__name__}: {err}); "
                                'each line needs "image", "question", "options", "answer".'
                                ) from err
    if not out:
        raise DataError(f"{data_dir} holds no questions; add one JSON object per line.")
    return out


def image_size(example: Example) -> tuple[int, int]:
    """(width, height) of an example's image from its header, without decoding the pixels."""
    src = example.source
    if isinstance(src, Image.Image):
        return src.size
    try:
        if isinstance(src, (bytes, bytearray)):
            return Image.open(io.BytesIO(src)).size
        if isinstance(src, tuple):
            return Image.open(io.BytesIO(_open_zip(src[0]).read(src[1]))).size
        return Image.open(src).size
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return example.image().size  # raises the DataError naming the file


def drop_large_images(examples: list[Example], max_side: int) -> list[Example]:
    """The examples whose image is at most `max_side` pixels wide and tall (the paper drops
    images larger than 1000x1000, Table 8: `--max-image-side 1000`)."""
    return [e for e in examples if max(image_size(e)) <= max_side]


def draw_adaptation_set(examples: list[Example], k: int, seed: int, sampling: str = "random",
                        num_classes: int | None = None) -> list[Example]:
    """k examples drawn uniformly without replacement with `random.Random(seed)`, labels stripped.

    sampling="biased" (Table 4 ablation) draws only from `num_classes` randomly chosen classes;
    it knowingly reads the labels to choose that pool (the drawn examples are still stripped).
    >>> pool = load_shapes("test")
    >>> [(e.answer, e.label) for e in draw_adaptation_set(pool, 2, seed=0)]
    [(None, None), (None, None)]
    """
    rng = random.Random(seed)
    if sampling == "biased":
        classes = sorted({e.label for e in examples if e.label is not None})
        if not classes or any(e.label is None for e in examples):
            raise DataError("Biased sampling chooses classes by label, but these examples have "
                            "no labels; draw from the labelled dataset.")
        if not isinstance(num_classes, int) or not 1 <= num_classes <= len(classes):
            raise DataError(f"Biased sampling needs num_classes between 1 and {len(classes)}, "
                            f"got {num_classes!r}; pass it.")
        chosen = set(rng.sample(classes, num_classes))
        examples = [e for e in examples if e.label in chosen]
    elif sampling != "random":
        raise DataError(f"Unknown sampling {sampling!r}; use 'random' or 'biased'.")
    if not isinstance(k, int) or not 1 <= k <= len(examples):
        raise DataError(f"Cannot draw {k!r} adaptation examples from a pool of {len(examples)}; "
                        f"choose k between 1 and {len(examples)}.")
    return [strip_labels(e) for e in rng.sample(examples, k)]
