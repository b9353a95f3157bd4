"""The question format for TTRV (paper section 4 and Appendix C): examples, labels stripped, the
adaptation-set draw.

Every dataset becomes a list of `Example`s: an image (loaded lazily; none for a text-only
question), the prompt text shown with it, the lettered options and the correct letter, and its
`kind`, which decides how a response's answer is read, voted on and graded (answers.py):
"choice" (options: letters), "count" (no options, an image: a number) or "math" (no options, no
image: a free-form math answer in \\boxed{}). TTRV adapts on a few of them with their labels
stripped (`draw_adaptation_set`) and evaluates on all of them.

    >>> pool = [Example(f"q{i}", "Which?", ["cat", "dog"], "AB"[i % 2], ["cat", "dog"][i % 2],
    ...                 Image.new("RGB", (8, 8))) for i in range(10)]
    >>> adapt = draw_adaptation_set(pool, k=4, seed=0)   # unlabeled: answer and label are None
    >>> pool[0].answer, pool[0].label, adapt[0].answer, len(adapt)
    ('A', 'cat', None, 4)

This module imports no other project module. The datasets are in the harness: presets.py
(`load_dataset`, the one dispatcher that knows every dataset name, and the paper's 16 named
benchmarks), hub.py (generic hub loading), shapes.py (the synthetic offline dataset) and
local_data.py (folder:PATH, jsonl:PATH).

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
  - Free-form questions have no options: about an image they are counts (`count_score` scores
    them), without one free-form math (TTRL's benchmarks); a loader may set `kind` itself.
Left out: image preprocessing (the model's processor resizes and normalises).
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import random
import string
import zipfile
import zlib
from typing import Any

from PIL import Image


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
KINDS = ("choice", "count", "math")   # how an answer is read, voted on and graded (answers.py)


@dataclasses.dataclass
class Example:
    """One question: multiple choice when it has options, about one image unless `source` is
    None. `source`: a file path, a (zip path, member) pair, a PIL image, or None (text only).
    `kind` ("choice", "count", "math"; KINDS) defaults to what options and source say.

    >>> ex = Example("x", "Q", ["cat", "dog"], "B", "dog", Image.new("RGB", (8, 8)))
    >>> ex.image().size, ex.options[LETTERS.index(ex.answer)] == ex.label, ex.kind
    ((8, 8), True, 'choice')
    >>> Example("m", "What is 3 + 4?", [], "7", None, None).kind
    'math'
    """

    id: str
    question: str
    options: list[str]
    answer: str | None
    label: str | None
    source: Any = dataclasses.field(repr=False)  # None: a text-only question (no image)
    kind: str | None = None
    level: str | None = None   # the difficulty level, where the source gives one (MATH-500: 1-5)

    def __post_init__(self):
        if self.kind is None:
            self.kind = "choice" if self.options else "count" if self.source is not None else "math"
        if self.kind not in KINDS:
            raise DataError(f"Question {self.id} has kind {self.kind!r}; use one of {KINDS}.")

    def image(self) -> Image.Image | None:
        """The image as RGB (None for a text-only question); `DataError` naming the file if it
        cannot be read."""
        src = self.source
        if src is None:
            return None
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
    """A counting question: no options, an image; `answer` is the true count as text."""
    return example.kind == "count"


def count_score(prediction: float | None, truth: float) -> float:
    """1 - symmetric percentage error of one count, in [0, 1]: 1 - |p - t| / (|p| + |t|); 0 with
    no prediction (None or NaN), 1 when both are 0. A dataset's score is the mean, 1 - sMAPE (the
    CAPTURe authors' compute_smape.py also counts a missing answer as 100% error)."""
    if prediction is None or math.isnan(prediction):
        return 0.0
    p, t = float(prediction), float(truth)
    return 1.0 if p == t else 1.0 - abs(p - t) / (abs(p) + abs(t))


def image_size(example: Example) -> tuple[int, int]:
    """(width, height) of an example's image from its header, without decoding the pixels;
    kept on the example, so a second call (each evaluation's batching) reads nothing."""
    if "_size" not in vars(example):
        example._size = _header_size(example)
    return example._size


def _header_size(example: Example) -> tuple[int, int]:
    src = example.source
    if src is None:                                  # a text-only question
        return (0, 0)
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
    images larger than 1000x1000, Table 8: `--max-image-side 1000`); text-only ones are kept."""
    return [e for e in examples if e.source is None or max(image_size(e)) <= max_side]


def draw_adaptation_set(examples: list[Example], k: int, seed: int, sampling: str = "random",
                        num_classes: int | None = None) -> list[Example]:
    """k examples drawn uniformly without replacement with `random.Random(seed)`, labels stripped.

    sampling="biased" (Table 4 ablation) draws only from `num_classes` randomly chosen classes;
    it knowingly reads the labels to choose that pool (the drawn examples are still stripped).
    >>> pool = [Example(str(i), "Q", ["a", "b"], "A", "a", None) for i in range(5)]
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
