"""The paper's 16 benchmarks as named presets, and `load_dataset`, the one dataset dispatcher.

    load_dataset("mathvista")                             # hub download at the pinned revision
    load_dataset("ai2d", data_dir="ai2d/")                # a local copy of the same files
    load_dataset("resisc45", protocol="official")         # the official prompt text / spelling
    --dataset 'hub:lmms-lab/MMBench_EN?options=A,B,C,D&answer_format=letter&split=dev'  # CLI

Imports data.py (question format, local loaders) and hub.py (generic hub loading); nothing
imports it but the callers (ttrv.py, eval.py, bench.py, tiny.py).

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

Generic hub datasets (hub:OWNER/NAME?...) and the file formats: see hub.py.
"""


from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
import re
from typing import Any, Callable

from data import (DTD_PROMPT, LETTERS, PROMPTS, RECOGNITION_PROMPT, DataError, Example,
                  _open_zip, _questions, display_name, drop_large_images, load_folder, load_jsonl,
                  load_shapes)
from harness.hub import (FREEFORM_PROMPT, LETTERED_PROMPT, _download, _fill, _needed, hub_examples,
                 lettered_example, load_hub, make_example, parse_hub_name, read_rows)

MATHVISTA_PROMPT = ("Hint: Please answer the question and provide the correct option letter, "
                    "e.g., A, B, C, D, at the end.\nDo not include any explanation or extra text."
                    "\nQuestion: {question}\nChoices:\n{options}")
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
# Official runs (issue 12, from the official train/test files): AI2D verbatim except the middle
# of its instruction, which the issue elides ("...") and we fill with the recognition prompt's
# words; SEED the same with one "\n" before Options; MME's tail likewise reconstructed.
OFFICIAL_AI2D_PROMPT = ("{question}\nChoose the correct answer from the options below and respond "
                        "with only the corresponding option letter ({letters}). Do not include "
                        "any explanation or extra text.\n\nOptions:\n{options}")
OFFICIAL_MME_PROMPT = ("{question}? Please answer with yes or no. Please respond with only the "
                       "corresponding option letter ({letters}). Do not include any explanation "
                       "or extra text. \n Options:\n{options}")
DTD_CLASSES = [  # tanganke/dtd README, ClassLabel names 0-46
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
    "crosshatched", "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy",
    "grid", "grooved", "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled",
    "matted", "meshed", "paisley", "perforated", "pitted", "pleated", "polka-dotted", "porous",
    "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained", "stratified", "striped",
    "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged"]



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


# ------------------------------------------------------------------------- RESISC45

RESISC45_CLASSES = [
    "airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral",
    "church", "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert",
    "forest", "freeway", "golf_course", "ground_track_field", "harbor", "industrial_area",
    "intersection", "island", "lake", "meadow", "medium_residential", "mobile_home_park",
    "mountain", "overpass", "palace", "parking_lot", "railway", "railway_station",
    "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship", "snowberg",
    "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace",
    "thermal_power_station", "wetland"]
RESISC45_SPLITS = {"test": range(601, 701), "train": range(1, 601)}  # TTRV tests on 601-700
RESISC45_REPO, RESISC45_FILE = "torchgeo/resisc45", "NWPU-RESISC45.zip"
RESISC45_REVISION = "a826b44d938a883185f11ebe3d512d38b464312f"
RESISC45_MD5 = "75206b2e16446591afa88e2628744886"


def resisc45_files(split: str = "test", indices=None) -> list[tuple[str, str]]:
    """(class, path inside NWPU-RESISC45/) of a split, classes alphabetical, numbers ascending.

    >>> files = resisc45_files("test")
    >>> len(files), files[0], files[-1][1]
    (4500, ('airplane', 'airplane/airplane_601.jpg'), 'wetland/wetland_700.jpg')
    """
    if indices is None:
        if split not in RESISC45_SPLITS:
            raise DataError(f"resisc45 has splits {sorted(RESISC45_SPLITS)}, not {split!r}.")
        indices = RESISC45_SPLITS[split]
    return [(c, f"{c}/{c}_{i:03d}.jpg") for c in RESISC45_CLASSES for i in indices]


def file_md5(path: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_md5(path: str, expected: str) -> None:
    """DataError unless `path` hashes to `expected`; a `<path>.md5-ok` marker skips re-hashing."""
    st = os.stat(path)
    stamp, marker = f"{expected} {st.st_size} {st.st_mtime_ns}", path + ".md5-ok"
    if os.path.exists(marker) and open(marker).read().strip() == stamp:
        return
    got = file_md5(path)
    if got != expected:
        raise DataError(f"{path} is corrupt or incomplete (md5 {got}, expected {expected}); "
                        "delete it and run again to download it afresh.")
    try:
        with open(marker, "w") as f:
            f.write(stamp + "\n")
    except OSError:
        pass  # read-only cache: hash again next time


def _download_resisc45() -> str:
    try:
        from huggingface_hub import hf_hub_download
        path = hf_hub_download(repo_id=RESISC45_REPO, repo_type="dataset",
                               filename=RESISC45_FILE, revision=RESISC45_REVISION)
    except Exception as err:  # offline, hub down, ...: all mean "get the file another way"
        raise DataError(f"Could not download {RESISC45_FILE} from the hub dataset {RESISC45_REPO} "
                        f"({type(err).__name__}); download it elsewhere and pass its path as "
                        "--data-dir PATH (data_dir=PATH).") from err
    verify_md5(path, RESISC45_MD5)
    return path


def load_resisc45(split: str = "test", data_dir: str | None = None, seed: int = 0,
                  prompt: str = RECOGNITION_PROMPT, *, indices=None,
                  spell=display_name) -> list[Example]:
    """RESISC45 from `data_dir` (NWPU-RESISC45.zip, the extracted NWPU-RESISC45 folder, or a
    folder holding either) or, without it, from the hub. `indices` narrows the image numbers."""
    files = resisc45_files(split, indices)
    path = data_dir or _download_resisc45()
    if not os.path.exists(path):
        raise DataError(f"{path} does not exist; pass NWPU-RESISC45.zip or its extracted folder.")
    root = next((d for d in (os.path.join(path, "NWPU-RESISC45"), path)
                 if os.path.isdir(os.path.join(d, RESISC45_CLASSES[0]))), None)
    if root is not None:  # extracted folder
        sources = [os.path.join(root, rel) for _, rel in files]
        missing = [s for s in sources if not os.path.isfile(s)]
    else:
        if os.path.isdir(path):
            path = os.path.join(path, RESISC45_FILE)
            if not os.path.isfile(path):
                raise DataError(f"{data_dir} holds no NWPU-RESISC45/ folder, class folders "
                                "(airplane/, ...) or NWPU-RESISC45.zip; point at one of those.")
        names = set(_open_zip(path).namelist())
        prefix = "NWPU-RESISC45/" if f"NWPU-RESISC45/{files[0][1]}" in names else ""
        sources = [(path, prefix + rel) for _, rel in files]
        missing = [m for _, m in sources if m not in names]
    if missing:
        raise DataError(f"{len(missing)} RESISC45 images are missing from {root or path} (first: "
                        f"{missing[0]}); it is not the complete dataset: download it again.")
    items = [(rel.split("/")[1][:-4], cls, src) for (cls, rel), src in zip(files, sources)]
    return _questions(items, RESISC45_CLASSES, seed, prompt, spell)


# ------------------------------------------------------------------------- presets

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
    answer is not one of their listed letters are skipped (the issue counts 62 answers outside
    A-D in testmini; letters beyond D are kept when the question lists them)."""
    multi = [r for r in rows if str(r.get("question_type", "")).startswith("multi")]
    return realworldqa_examples([dict(r, question=r["query_wo"]) for r in multi],
                                prompt or "{question}", "mathverse")


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
# hf_hub_download of both files: VLMEvalKit's CAPTURe loader; entries: the authors' repo.
CAPTURE_REPO, CAPTURE_FILES = "atinp/CAPTURe", ["real_metadata.json", "real_dataset.zip"]


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


# ------------------------------------------------------------------------- the dispatcher

# name -> loader(split, data_dir, seed, prompt, spell); folder/jsonl take their path as data_dir
DATASETS = {"resisc45": load_resisc45, "shapes": load_shapes, "folder": load_folder,
            "jsonl": load_jsonl, **{n: functools.partial(load_preset, n) for n in PRESETS},
            "imagenet-v2": load_imagenet_v2, "capture": load_capture}
# The paper's 16 benchmarks (Tables 1, 2, 7, 8), all served by load_dataset.
PAPER_BENCHMARKS = ["resisc45", "dtd", "imagenet", "imagenet-v2", "imagenet-a", "imagenet-r",
                    "imagenet-sketch", "food101", "ai2d", "mme", "seed", "realworldqa",
                    "mathvista", "mathverse", "crpe", "capture"]
NAMES = [k + (":PATH" if k in ("folder", "jsonl") else "") for k in DATASETS] + [
    "hub:OWNER/NAME?image=...&question=...&answer=..."]


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
    """Examples of any dataset name: a preset (PAPER_BENCHMARKS), "shapes", "folder:PATH",
    "jsonl:PATH" or "hub:OWNER/NAME?...". `prompt` overrides the dataset's template.
    protocol "official": the official runs' prompt text and option spelling (class names with
    underscores, as in their test prompts; `official_prompt`). `max_image_side`: drop examples
    whose image is wider or taller than this (the paper drops images over 1000x1000, Table 8).

    >>> len(load_dataset("shapes", "train")), len(load_dataset("shapes", "test", seed=1))
    (400, 200)
    """
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
        if kind in ("shapes", "jsonl", "capture"):      # no class names to spell
            examples = loader(split, path or data_dir, seed, template)
        else:
            examples = loader(split, path or data_dir, seed, template,
                              spell=str if official else display_name)
    else:
        raise DataError(f"Unknown dataset {name!r}; known datasets: {', '.join(NAMES)}.")
    return drop_large_images(examples, max_image_side) if max_image_side else examples
