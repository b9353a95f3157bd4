"""Your own data, no hub: `folder:PATH` (one sub-folder of images per class) and `jsonl:PATH`.

    load_dataset("folder:animals/")        # animals/<class>/<image>, >= 4 classes: 4-way MC
    load_dataset("jsonl:questions.jsonl")  # {"image", "question", "options", "answer"} per line
    load_dataset("jsonl:problems.jsonl")   # {"question", "answer"}: free-form math, no image
                                           # (optional "level": results by level)

Choices:
  - folder: every image is one question about its class, asked as data.make_choice_question
    does (classes alphabetical, images ascending, one `random.Random(seed)`).
  - jsonl: a question is shown verbatim (Appendix C has a different prompt per benchmark); its
    options are not appended to it. A row with neither "options" nor "image" is a text-only
    math question (harness/math_data.math_example: kind "math", its answer checked).
Imports data.py and math_data.math_example; presets.py's `load_dataset` dispatches to these.
"""

from __future__ import annotations

import json
import os
from typing import Any

from data import LETTERS, RECOGNITION_PROMPT, DataError, Example, _questions, display_name
from harness.math_data import math_example

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
                if isinstance(row, dict) and "options" not in row and "image" not in row:
                    out.append(math_example(str(row.get("id", f"line{n}")), row.get("question"),
                                            row.get("answer"), f"{data_dir} line {n}",
                                            level=row.get("level")))
                    continue
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
                                'each line needs "image", "question", "options", "answer" (or '
                                '"question", "answer" only: a math question).') from err
    if not out:
        raise DataError(f"{data_dir} holds no questions; add one JSON object per line.")
    return out
