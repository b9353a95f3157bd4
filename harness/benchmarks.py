"""The benchmarks that need their own code: row converters and local file layouts.

A preset's rows go through hub.hub_examples by a column mapping unless its `convert` is one of
these (presets.PRESETS names them). Also the official runs' prompt texts.
  mme          yes/no questions -> options "A. No", "B. Yes" (Appendix C), the letter from yes/no.
  realworldqa  the question holds its "A. ..." lines and the instruction: shown verbatim.
  crpe         the same shape (text holds the options), images from COCO val2017 beside it.
  mathverse    query_wo (the benchmark's own direct-answer prompt) verbatim, multi-choice only.
  capture      CAPTURe-real: real_metadata.json + real_dataset.zip -> free-form counts.
  imagenet-v2  local only: the extracted matched-frequency folder (0..999) + classes.txt.
Imports data.py and hub.py.
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Any

from data import (LETTERS, RECOGNITION_PROMPT, DataError, Example, _open_zip, _questions,
                  display_name)
from harness.hub import (FREEFORM_PROMPT, LETTERED_PROMPT, _download, _fill, lettered_example,
                         make_example)

REALWORLDQA_INSTRUCTION = ("Please answer directly with only the letter of the correct option "
                           "and nothing else.")
# The CAPTURe authors' question (github atinpothiraj/CAPTURe occluded_scripts/qwen2.py). Of
# TTRV's suffix the notes quote only "put your final answer within \boxed{}": reconstructed.
CAPTURE_QUESTION = (
    "Count the exact number of {o} in the image. Assume the pattern of {o} continues behind any "
    "black box. Provide the total number of {o} as if the black box were not there. Only count "
    "{o} that are visible within the frame (or would be visible without the occluding box). If "
    "{o} are partially in the frame (i.e. if any part of {o} are visible), count it. If the {o} "
    "would be partially in the frame without the occluding box, count it.")
# Official runs (from the official train/test files, as quoted to us): AI2D verbatim except the
# middle of its instruction, which the quote elides ("...") and we fill with the recognition
# prompt's words; SEED the same with one "\n" before Options; MME's tail likewise reconstructed.
OFFICIAL_AI2D_PROMPT = ("{question}\nChoose the correct answer from the options below and respond "
                        "with only the corresponding option letter ({letters}). Do not include "
                        "any explanation or extra text.\n\nOptions:\n{options}")
OFFICIAL_MME_PROMPT = ("{question}? Please answer with yes or no. Please respond with only the "
                       "corresponding option letter ({letters}). Do not include any explanation "
                       "or extra text. \n Options:\n{options}")


def mme_examples(rows: list[dict], prompt: str | None, prefix: str = "mme") -> list[Example]:
    """Yes/no questions as "A. No", "B. Yes" (ids by row: MME's question_id is the image path,
    shared by a yes and a no question)."""
    official, out = prompt == OFFICIAL_MME_PROMPT, []
    for i, r in enumerate(rows):
        answer = str(r["answer"]).strip().rstrip(".").lower()
        if answer not in ("no", "yes"):
            raise DataError(f"MME row {i} has answer {r['answer']!r}, not Yes or No.")
        question, options = str(r["question"]), ["No", "Yes"]
        if official:  # the official runs vary the A/B order (their rule is not public: seeded
            question = re.sub(r"\??\s*Please answer yes or no\.?\s*$", "", question)  # by row)
            options = options[::-1] if random.Random(f"mme/{i}").random() < 0.5 else options
        out.append(lettered_example(f"{prefix}-{i:05d}", question, options,
                                    options.index(answer.capitalize()), r["image"],
                                    prompt or LETTERED_PROMPT))
    return out


def realworldqa_examples(rows: list[dict], prompt: str | None, prefix: str = "realworldqa",
                         question_key: str = "question") -> list[Example]:
    """Questions whose text lists "A. ..." options and whose answer is one of those letters,
    shown verbatim (the instruction appended if absent); free-form ones are skipped."""
    out = []
    for i, r in enumerate(rows):
        question, answer = str(r[question_key]).strip(), str(r["answer"]).strip().upper()
        found = re.findall(r"^\s*\(?([A-Z])[.:)]\s*(.+?)\s*$", question, re.M)
        options = [o for _, o in found]
        if (len(found) < 2 or "".join(L for L, _ in found) != LETTERS[:len(found)]
                or len(answer) != 1 or answer not in LETTERS[:len(found)]):
            continue
        if REALWORLDQA_INSTRUCTION not in question:
            question += "\n" + REALWORLDQA_INSTRUCTION
        out.append(make_example(f"{prefix}-{i:04d}", _fill(prompt or "{question}", {"question"},
                                question=question), options, answer,
                                options[LETTERS.index(answer)], r["image"]))
    return out


def capture_example(row: dict, source: Any, prompt: str | None = None) -> Example:
    """One CAPTURe real_metadata.json entry -> a free-form counting question."""
    question = CAPTURE_QUESTION.format(o=str(row["object"]).strip())
    count = str(row["ground_truth"])
    return make_example(os.path.splitext(str(row["image_file"]))[0],
                        _fill(prompt or FREEFORM_PROMPT, {"question"}, question=question),
                        [], count, count, source)


def crpe_examples(rows: list[dict], prompt: str | None) -> list[Example]:
    """CRPE rows (question_id, image, text holding "A. ..." lines and the instruction, answer
    letter) shown verbatim, like RealWorldQA; their images must exist (COCO val2017 is not on
    the CRPE hub repo)."""
    missing = [r["image"] for r in rows if isinstance(r["image"], str)
               and not os.path.isfile(r["image"])]
    if missing:
        raise DataError(f"{len(missing)} CRPE images are missing (first: {missing[0]}); put COCO "
                        "val2017 in coco/val2017/ and CRPE's abnormal_images/ next to "
                        "crpe_relation.jsonl and pass that folder as --data-dir.")
    return realworldqa_examples(rows, prompt, "crpe", question_key="text")


def mathverse_examples(rows: list[dict], prompt: str | None) -> list[Example]:
    """MathVerse multi-choice rows: `query_wo` (the benchmark's own direct-answer prompt, whose
    "Choices:" lines are "A:..." ) shown verbatim, the answer a letter among them. Rows whose
    answer is not one of their listed letters are skipped (testmini has answers outside A-D;
    letters beyond D are kept when the question lists them)."""
    multi = [r for r in rows if str(r.get("question_type", "")).startswith("multi")]
    return realworldqa_examples([dict(r, question=r["query_wo"]) for r in multi],
                                prompt or "{question}", "mathverse")


# hf_hub_download of both files: VLMEvalKit's CAPTURe loader; entries: the authors' repo.
CAPTURE_REPO, CAPTURE_FILES = "atinp/CAPTURe", ["real_metadata.json", "real_dataset.zip"]


def load_imagenet_v2(split: str = "test", data_dir: str | None = None, seed: int = 0,
                     prompt: str | None = None, spell=display_name) -> list[Example]:
    """ImageNet-V2 (matched-frequency) from its extracted tarball: class folders 0..999, plus a
    classes.txt of the 1,000 ImageNet class names in index order (no hub copy confirmed)."""
    names_file = os.path.join(data_dir or "", "classes.txt")
    if not data_dir or not os.path.isfile(names_file):
        raise DataError("imagenet-v2 needs --data-dir DIR: the extracted "
                        "imagenetv2-matched-frequency-format-val folder (class folders 0..999) "
                        "with a classes.txt of the 1,000 ImageNet class names, one a line.")
    with open(names_file, encoding="utf-8") as f:
        classes = [line.split(",")[0].strip() for line in f if line.strip()]
    items = [(f"{d}/{f}", classes[int(d)], os.path.join(data_dir, d, f))
             for d in sorted((d for d in os.listdir(data_dir) if d.isdigit()), key=int)
             for f in sorted(os.listdir(os.path.join(data_dir, d)))]
    return _questions(items, classes, seed, prompt or RECOGNITION_PROMPT, spell)


def load_capture(split: str = "test", data_dir: str | None = None, seed: int = 0,
                 prompt: str | None = None) -> list[Example]:
    """CAPTURe-real from a folder holding real_metadata.json and real_dataset.zip (or the zip's
    extracted dataset/ folder), or from the hub. One split: `split` and `seed` are ignored."""
    root = data_dir or _download(CAPTURE_REPO, "main", CAPTURE_FILES)
    meta = os.path.join(root, CAPTURE_FILES[0])
    if not os.path.isfile(meta):
        raise DataError(f"{root} holds no {CAPTURE_FILES[0]}; pass the folder with "
                        "real_metadata.json and real_dataset.zip.")
    with open(meta, encoding="utf-8") as f:
        rows = json.load(f)
    archive = os.path.join(root, CAPTURE_FILES[1])
    if os.path.isfile(archive):
        members = set(_open_zip(archive).namelist())
        prefix = next((p for p in ("dataset/", "real_dataset/", "")
                       if rows and p + rows[0]["image_file"] in members), "dataset/")
        sources = [(archive, prefix + r["image_file"]) for r in rows]
        missing = [m for _, m in sources if m not in members]
    else:
        folder = next((d for d in (os.path.join(root, "dataset"),
                                   os.path.join(root, "real_dataset")) if os.path.isdir(d)), root)
        sources = [os.path.join(folder, r["image_file"]) for r in rows]
        missing = [s for s in sources if not os.path.isfile(s)]
    if missing or not rows:
        raise DataError(f"{len(missing)} CAPTURe images are missing at {root} (first: "
                        f"{(missing or ['-'])[0]}); download real_dataset.zip again.")
    return [capture_example(r, s, prompt) for r, s in zip(rows, sources)]
