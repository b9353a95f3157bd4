"""The paper's 16 benchmarks as named presets, and `load_dataset`, the one dataset dispatcher.

    load_dataset("mathvista")                             # hub download at the pinned revision
    load_dataset("ai2d", data_dir="ai2d/")                # a local copy of the same files
    load_dataset("resisc45", protocol="official")         # the official prompt text / spelling
    --dataset 'hub:lmms-lab/MMBench_EN?options=A,B,C,D&answer_format=letter&split=dev'  # CLI

Imports data.py (question format), hub.py (generic hub loading), benchmarks.py and resisc45.py
(the presets with their own code), shapes.py and local_data.py (the datasets that need no hub);
nothing imports it but the callers (ttrv.py, eval.py, bench.py, tiny.py).

Presets (repo @ pinned revision; columns; what becomes of them). Sources are in PRESETS' comments.
  resisc45     the paper's test set = images 601-700 of each of the 45 classes (4,500); "train" =
               images 1-600. From NWPU-RESISC45.zip (hub dataset torchgeo/resisc45, pinned
               revision, md5-checked) or an extracted NWPU-RESISC45 folder given as data_dir.
  dtd          tanganke/dtd: image, label (ClassLabel, 47 textures) -> 4-way MC, DTD_PROMPT.
  imagenet-r   axiong/imagenet-r: image, class_name ("afghan_hound", 200) -> 4-way MC.
  ai2d         lmms-lab/ai2d: question, options (list), answer (an index as text).
  mme          lmms-lab/MME: question ("... Please answer yes or no."), answer Yes/No -> options
               "A. No", "B. Yes" (Appendix C), the letter from yes/no.
  seed         lmms-lab/SEED-Bench: question, choice_a..d, answer (letter), data_type, image (a
               list); image questions only.
  realworldqa  lmms-lab/RealWorldQA: question (holds "A. ..." lines and the instruction), answer;
               lettered questions only, shown verbatim.
  mathvista    AI4Math/MathVista testmini: pid, question, decoded_image, choices, answer (a
               choice's text), question_type; multi_choice only. "test" means testmini (the test
               split's answers are not public).
  capture      atinp/CAPTURe real_metadata.json ({image_file, object, ground_truth}) +
               real_dataset.zip (dataset/<image_file>) -> free-form counts: options [], answer "63".
  mathverse    AI4Math/MathVerse testmini.parquet: query_wo (its own direct-answer prompt, "A:..."
               choices) shown verbatim, answer letter; multi-choice only (confirmed).
  crpe         OpenGVLab/CRPE crpe_relation.jsonl: text (options + instruction) verbatim, answer
               letter; images coco/val2017/ (from COCO) and abnormal_images/ next to it.
  imagenet, imagenet-a, imagenet-sketch, food101: image + class -> 4-way MC, recognition
               prompt; ImageNet names = the first WordNet lemma of each synset ("tench").
               Repos/columns NOT confirmed for imagenet, imagenet-a and imagenet-sketch's columns
               (Preset.confirmed False; see PRESETS' comments); food101 confirmed.
  imagenet-v2  local only: the extracted matched-frequency folder (0..999) + classes.txt.
seed, capture and the unconfirmed presets use revision "main". --max-image-side N (Table 8:
1000) drops larger images for any dataset; no preset turns it on by itself.

TTRL's text benchmarks (math500, aime24, amc23, gpqa-diamond; text-only questions): math_data.py.
Generic hub datasets (hub:OWNER/NAME?...) and the file formats: see hub.py.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from data import (DTD_PROMPT, PROMPTS, RECOGNITION_PROMPT, DataError, Example, display_name,
                  drop_large_images)
from harness.benchmarks import (OFFICIAL_AI2D_PROMPT, OFFICIAL_MME_PROMPT, crpe_examples,
                                load_capture, load_imagenet_v2, mathverse_examples, mme_examples,
                                realworldqa_examples)
from harness.hub import _download, _needed, hub_examples, load_hub, parse_hub_name, read_rows
from harness.local_data import load_folder, load_jsonl
from harness.math_data import MATH_BENCHMARKS, at_level, load_math, split_level
from harness.resisc45 import load_resisc45
from harness.shapes import load_shapes
from harness.tiny_math import load_tiny_math

MATHVISTA_PROMPT = ("Hint: Please answer the question and provide the correct option letter, "
                    "e.g., A, B, C, D, at the end.\nDo not include any explanation or extra text."
                    "\nQuestion: {question}\nChoices:\n{options}")
DTD_CLASSES = [  # tanganke/dtd README, ClassLabel names 0-46
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
    "crosshatched", "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy",
    "grid", "grooved", "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled",
    "matted", "meshed", "paisley", "perforated", "pitted", "pleated", "polka-dotted", "porous",
    "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained", "stratified", "striped",
    "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged"]


@dataclasses.dataclass(frozen=True)
class Preset:
    repo: str
    revision: str
    columns: dict[str, str]  # a hub_examples mapping, or the columns `convert` reads
    splits: dict[str, str] = dataclasses.field(default_factory=lambda: {"test": "test"})
    prompt: str | None = None  # default template (None: that of the question kind)
    style: str = "{}. {}"
    names: dict[str, list[str]] | None = None
    convert: Callable | None = None  # (rows, prompt) -> Examples, instead of hub_examples
    files: tuple[str, ...] = ()  # download patterns (default: the split's parquet shards)
    lemma: bool = False  # ClassLabel names "tench, Tinca tinca" -> their first WordNet lemma
    confirmed: bool = True  # hub source and columns confirmed from public documentation


PRESETS = {
    # hf.co/datasets/tanganke/dtd README (image + ClassLabel names; train 3760 / test 1880); its
    # tree/cd52f56b ("Convert dataset to Parquet") holds data/{train,test}-00000-of-00001.parquet.
    "dtd": Preset("tanganke/dtd", "cd52f56b97bb45a25246b6b3fd24531e3b0d4405", {"label": "label"},
                  {"test": "test", "train": "train"}, DTD_PROMPT, names={"label": DTD_CLASSES}),
    # hf.co/datasets/axiong/imagenet-r README @762a23f (config test, files test/test-*; image,
    # wnid, class_name; 30,000 rows); tree/a2bdc72/test: test-0000{0..4}-of-00005.parquet.
    "imagenet-r": Preset("axiong/imagenet-r", "762a23f169e080bef0be7c9d96bf73a126cbb660",
                         {"label": "class_name"}),
    # hf.co/datasets/lmms-lab/ai2d README @c83a9b9 (question, options, answer, image; test 3088,
    # data/test-*); lmms-eval tasks/ai2d/utils.py: options[int(answer)] is the answer.
    "ai2d": Preset("lmms-lab/ai2d", "c83a9b9692933aff8349157c88a413df9d02c4e5",
                   {"options": "options", "answer_format": "index"}),
    # hf.co/datasets/lmms-lab/MME README (question_id, image, question, answer, category; test
    # 2374) and tree/d6c9023/data (4 shards); lmms-eval tasks/mme/utils.py (yes/no answers).
    "mme": Preset("lmms-lab/MME", "d6c9023f017b564f7b3ccccf5348166bce8fdbcd",
                  {"image": "image", "question": "question", "answer": "answer"},
                  convert=mme_examples),
    # lmms-eval tasks/seedbench/seedbench.yaml + utils.py (lmms-lab/SEED-Bench, split test;
    # question, choice_a-d, answer letter, data_type, image list); hf tree main: data/ shards.
    "seed": Preset("lmms-lab/SEED-Bench", "main",
                   {"id": "question_id", "options": "choice_a,choice_b,choice_c,choice_d",
                    "answer_format": "letter", "where": "data_type:image"}),
    # hf.co/datasets/lmms-lab/RealWorldQA tree/907c4e5/data (test-0000{0,1}-of-00002.parquet);
    # lmms-eval tasks/realworldqa/utils.py (image, question holding options + instruction, answer).
    "realworldqa": Preset("lmms-lab/RealWorldQA", "907c4e5228fd1703c710ed937601cb5f89ab8d5c",
                          {"image": "image", "question": "question", "answer": "answer"},
                          convert=realworldqa_examples),
    # hf.co/datasets/AI4Math/MathVista README (pid, question, decoded_image, choices, answer,
    # question_type; testmini 1000) and tree/2b6ad69 (data/testmini-00000-of-00001-*.parquet).
    "mathvista": Preset("AI4Math/MathVista", "2b6ad69445fbb5695c9b165475e8decdbeb97747",
                        {"id": "pid", "image": "decoded_image", "options": "choices",
                         "answer_format": "text", "where": "question_type:multi_choice"},
                        {"test": "testmini", "testmini": "testmini"}, MATHVISTA_PROMPT, "({}) {}"),
    # Confirmed: hf.co/datasets/AI4Math/MathVerse tree/268dfc5 (testmini.parquet at the root);
    # lmms-eval tasks/mathverse/utils.py reads question, answer, query_wo, query_cot,
    # question_type, problem_version, image.
    "mathverse": Preset("AI4Math/MathVerse", "268dfc55b62296be3bdf6406d6dea07bd06a7d64",
                        {"image": "image", "question": "query_wo", "answer": "answer",
                         "where": "question_type:multi-choice"},
                        {"test": "testmini", "testmini": "testmini"}, convert=mathverse_examples,
                        files=("testmini.parquet",)),
    # Confirmed: hf.co/datasets/OpenGVLab/CRPE tree/a2bf6bc (crpe_relation.jsonl, abnormal_images/;
    # README: single-choice, circular); lmms-eval crpe_relation/utils.py (image, text, answer;
    # images coco/val2017/* not on the repo). The paper's ~7,575 questions = the relation file.
    "crpe": Preset("OpenGVLab/CRPE", "a2bf6bc9e46d88688121f606b4b2d4b4ae67935b",
                   {"image": "image", "question": "text", "answer": "answer"},
                   {"test": "crpe_relation"}, convert=crpe_examples,
                   files=("crpe_relation.jsonl", "abnormal_images/*")),
    # NOT confirmed (gated repo; columns image + ClassLabel label as in its card, from memory):
    # ILSVRC/imagenet-1k validation (50,000). Class names = first WordNet lemma of each synset.
    "imagenet": Preset("ILSVRC/imagenet-1k", "main", {"label": "label"}, {"test": "validation"},
                       lemma=True, confirmed=False),
    # NOT confirmed: axiong/imagenet-a, assumed laid out like axiong/imagenet-r (class_name).
    "imagenet-a": Preset("axiong/imagenet-a", "main", {"label": "class_name"}, confirmed=False),
    # Tree confirmed: hf.co/datasets/nateraw/imagenet-sketch tree/c865ba0/default/train
    # (0000..0016.parquet, its only split); columns image + ClassLabel label NOT confirmed.
    "imagenet-sketch": Preset("nateraw/imagenet-sketch", "c865ba0d88b38e01e242c97ed9d9dddbd0342287",
                              {"label": "label"}, {"test": "train"}, lemma=True, confirmed=False),
    # Confirmed: the hub viewer of ethz/food101 shows splits train (75.8k) and validation
    # (25.3k = the official test split, 250 per class); its loading script's dataset_infos give
    # image + ClassLabel label, 101 names ("apple_pie", ...). Revision not pinned ("main").
    "food101": Preset("ethz/food101", "main", {"label": "label"}, {"test": "validation"}),
}


def preset_examples(name: str, rows: list[dict], seed: int = 0, prompt: str | None = None,
                    names: dict[str, list[str]] | None = None, spell=display_name
                    ) -> list[Example]:
    """A preset's rows (as read from its files) -> Examples."""
    p = PRESETS[name]
    if p.convert:
        return p.convert(rows, prompt)
    names = {**(p.names or {}), **(names or {})}
    if p.lemma:
        names = {k: [n.split(",")[0].strip() for n in v] for k, v in names.items()}
    return hub_examples(rows, p.columns, names, seed, prompt or p.prompt, name, p.style, spell)


def load_preset(name: str, split: str = "test", data_dir: str | None = None, seed: int = 0,
                prompt: str | None = None, spell=display_name) -> list[Example]:
    p = PRESETS[name]
    if split not in p.splits:
        raise DataError(f"{name} has splits {sorted(p.splits)}, not {split!r}.")
    real = p.splits[split]
    path = data_dir or _download(p.repo, p.revision, list(p.files) or [f"*{real}-*.parquet",
                                                                         f"*{real}/*.parquet"])
    rows, names = read_rows(path, real, _needed(p.columns), p.columns.get("image", "image"))
    examples = preset_examples(name, rows, seed, prompt, names, spell)
    if not examples:
        raise DataError(f"{path} holds no usable {name} questions in split {real}.")
    return examples


# ------------------------------------------------------------------------- the dispatcher

# name -> loader(split, data_dir, seed, prompt, spell); folder/jsonl take their path as data_dir
DATASETS = {"resisc45": load_resisc45, "shapes": load_shapes, "folder": load_folder,
            "jsonl": load_jsonl, **{n: functools.partial(load_preset, n) for n in PRESETS},
            "imagenet-v2": load_imagenet_v2, "capture": load_capture,
            "tiny-math": load_tiny_math,
            **{n: functools.partial(load_math, n) for n in MATH_BENCHMARKS}}
# The paper's 16 benchmarks (Tables 1, 2, 7, 8), all served by load_dataset.
PAPER_BENCHMARKS = ["resisc45", "dtd", "imagenet", "imagenet-v2", "imagenet-a", "imagenet-r",
                    "imagenet-sketch", "food101", "ai2d", "mme", "seed", "realworldqa",
                    "mathvista", "mathverse", "crpe", "capture"]
NAMES = [k + (":PATH" if k in ("folder", "jsonl") else "") for k in DATASETS] + [
    "hub:OWNER/NAME?image=...&question=...&answer=...",
    "NAME:levelN (one difficulty level, e.g. math500:level5)"]


def official_prompt(kind: str) -> str | None:
    """The official runs' template of a dataset (protocol "official"), or None for its own.
    Recognition prompts keep the leading " \n " the official content list puts after the image."""
    if kind == "ai2d":
        return OFFICIAL_AI2D_PROMPT
    if kind == "seed":
        return OFFICIAL_AI2D_PROMPT.replace("\n\nOptions", "\nOptions")
    if kind == "mme":
        return OFFICIAL_MME_PROMPT
    if kind in ("resisc45", "imagenet", "imagenet-v2", "imagenet-a", "imagenet-r",
                "imagenet-sketch", "food101", "dtd", "folder"):
        return " \n " + PROMPTS.get(kind, RECOGNITION_PROMPT)
    return None


def load_dataset(name: str, split: str = "test", *, data_dir: str | None = None, seed: int = 0,
                 prompt: str | None = None, protocol: str = "paper",
                 max_image_side: int | None = None) -> list[Example]:
    """Examples of any dataset name: a preset (PAPER_BENCHMARKS), a math benchmark
    (math_data.MATH_BENCHMARKS), "shapes", "folder:PATH",
    "jsonl:PATH" or "hub:OWNER/NAME?..."; any of them + ":levelN" keeps one difficulty level
    (math_data.split_level). `prompt` overrides the dataset's template.
    protocol "official": the official runs' prompt text and option spelling (class names with
    underscores, as in their test prompts; `official_prompt`). `max_image_side`: drop examples
    whose image is wider or taller than this (the paper drops images over 1000x1000, Table 8).

    >>> len(load_dataset("shapes", "train")), len(load_dataset("shapes", "test", seed=1))
    (400, 200)
    """
    full, (name, level) = name, split_level(name)   # "math500:level5": one level
    kind, _, path = name.partition(":")
    official = protocol == "official"
    if kind == "hub":
        repo, columns = parse_hub_name(name)
        examples = load_hub(repo, split, data_dir, seed, prompt, columns=columns)
    elif kind in DATASETS:
        template = prompt or (official and official_prompt(kind)) or None
        if kind in ("resisc45", "shapes", "folder", "jsonl", "imagenet-v2"):
            template = template or PROMPTS.get(kind, RECOGNITION_PROMPT)
        loader = DATASETS[kind]
        if kind in ("shapes", "jsonl", "capture", "tiny-math", *MATH_BENCHMARKS):  # no class names
            examples = loader(split, path or data_dir, seed, template)
        else:
            examples = loader(split, path or data_dir, seed, template,
                              spell=str if official else display_name)
    else:
        raise DataError(f"Unknown dataset {full!r}; known datasets: {', '.join(NAMES)}.")
    examples = at_level(examples, level, name) if level else examples
    return drop_large_images(examples, max_image_side) if max_image_side else examples

