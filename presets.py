"""The paper's other benchmarks (Appendix C prompts) and a generic hub loader, as `Example`s.

    data.load_dataset("mathvista")                        # hub download at the pinned revision
    data.load_dataset("ai2d", data_dir="ai2d/")           # a local copy of the same files
    --dataset 'hub:lmms-lab/MMBench_EN?options=A,B,C,D&answer_format=letter&split=dev'  # CLI

Presets (repo @ pinned revision; columns; what becomes of them). Sources are in PRESETS' comments.
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
Not presets (hub source or columns not confirmed; use hub:): CRPE, MathVerse, ImageNet-A/-Sketch/
-V2. seed and capture use revision "main" (no full commit id of theirs could be confirmed).

Generic: "hub:OWNER/NAME?key=value&..." (fits in --dataset; python: load_hub(repo, columns={})).
Keys: image, question, answer (defaults: same names), options (one list column, or columns joined
by ","), answer_format (auto|letter|index|text), label (class-label mode: image + label -> 4-way
MC; class names from the parquet's ClassLabel or names=FILE, one a line), id, where (COLUMN:VALUE
keeps matching rows), split (wins over the split argument; ttrv.py always asks "test"), revision
(default main). Neither options nor label: free-form questions (counting), answer kept as text.

Files: without data_dir, huggingface_hub fetches the split's parquet shards ({split}-*.parquet or
{split}/*.parquet); offline -> DataError saying how to fetch them elsewhere. data_dir: that folder,
one .parquet, or a .jsonl/.json of rows in the same columns (image = a path relative to it).
Parquet needs pyarrow (optional; `pip install pyarrow`), JSONL does not. Parquet images stay
encoded in memory (`EncodedExample`) until `image()`.
Prompts: lettered questions take a template with {question}, {options} (the option lines) and
{letters} ("A, B, C, or D"); recognition ones an o1..o4 template; free-form ones {question}.
Counting is scored by `count_score` (mean over a dataset = 1 - sMAPE); `is_counting` tells them.
"""


from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from typing import Any, Callable

from data import (DTD_PROMPT, LETTERS, PROMPTS, RECOGNITION_PROMPT, DataError, Example,
                  _open_zip, _questions, load_folder, load_jsonl, load_shapes)
from hub import (FREEFORM_PROMPT, LETTERED_PROMPT, _download, _fill, _needed, hub_examples,
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
    out = []
    for i, r in enumerate(rows):
        answer = str(r["answer"]).strip().rstrip(".").lower()
        if answer not in ("no", "yes"):
            raise DataError(f"MME row {i} has answer {r['answer']!r}, not Yes or No.")
        out.append(lettered_example(f"{prefix}-{i:05d}", r["question"], ["No", "Yes"],
                                    int(answer == "yes"), r["image"], prompt or LETTERED_PROMPT))
    return out


def realworldqa_examples(rows: list[dict], prompt: str | None,
                         prefix: str = "realworldqa") -> list[Example]:
    """Questions whose text lists "A. ..." options and whose answer is one of those letters,
    shown verbatim (the instruction appended if absent); free-form ones are skipped."""
    out = []
    for i, r in enumerate(rows):
        question, answer = str(r["question"]).strip(), str(r["answer"]).strip().upper()
        found = re.findall(r"^\s*([A-Z])\.\s+(.+?)\s*$", question, re.M)
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
                  prompt: str = RECOGNITION_PROMPT, *, indices=None) -> list[Example]:
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
    return _questions(items, RESISC45_CLASSES, seed, prompt)


# ------------------------------------------------------------------------- presets

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
}
# hf_hub_download of both files: VLMEvalKit's CAPTURe loader; entries: the authors' repo.
CAPTURE_REPO, CAPTURE_FILES = "atinp/CAPTURe", ["real_metadata.json", "real_dataset.zip"]


def preset_examples(name: str, rows: list[dict], seed: int = 0, prompt: str | None = None,
                    names: dict[str, list[str]] | None = None) -> list[Example]:
    """A preset's rows (as read from its files) -> Examples."""
    p = PRESETS[name]
    if p.convert:
        return p.convert(rows, prompt)
    return hub_examples(rows, p.columns, {**(p.names or {}), **(names or {})}, seed,
                        prompt or p.prompt, name, p.style)


def load_preset(name: str, split: str = "test", data_dir: str | None = None, seed: int = 0,
                prompt: str | None = None) -> list[Example]:
    p = PRESETS[name]
    if split not in p.splits:
        raise DataError(f"{name} has splits {sorted(p.splits)}, not {split!r}.")
    real = p.splits[split]
    path = data_dir or _download(p.repo, p.revision, [f"*{real}-*.parquet", f"*{real}/*.parquet"])
    rows, names = read_rows(path, real, _needed(p.columns), p.columns.get("image", "image"))
    examples = preset_examples(name, rows, seed, prompt, names)
    if not examples:
        raise DataError(f"{path} holds no usable {name} questions in split {real}.")
    return examples


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


# name -> loader(split, data_dir, seed, prompt), like data.DATASETS; "hub:..." goes through `load`
BENCHMARKS = {**{n: functools.partial(load_preset, n) for n in PRESETS}, "capture": load_capture}
NAMES = [*BENCHMARKS, "hub:OWNER/NAME?image=...&question=...&answer=..."]


def knows(kind: str) -> bool:
    """Whether `load` serves a dataset name's kind (its part before ":")."""
    return kind in BENCHMARKS or kind == "hub"


def load(name: str, split: str = "test", *, data_dir: str | None = None, seed: int = 0,
         prompt: str | None = None) -> list[Example]:
    """A preset, "capture" or "hub:OWNER/NAME?..."; `prompt` None: the dataset's own template."""
    if name.startswith("hub:"):
        repo, columns = parse_hub_name(name)
        return load_hub(repo, split, data_dir, seed, prompt, columns=columns)
    if name not in BENCHMARKS:
        raise DataError(f"Unknown benchmark {name!r}; known: {', '.join(NAMES)}.")
    return BENCHMARKS[name](split, data_dir, seed, prompt)


# ------------------------------------------------------------------------- entry points

# name -> loader(split, data_dir, seed, prompt); folder and jsonl take their path as data_dir
DATASETS = {"resisc45": load_resisc45, "shapes": load_shapes,
            "folder": load_folder, "jsonl": load_jsonl}


def load_dataset(name: str, split: str = "test", *, data_dir: str | None = None, seed: int = 0,
                 prompt: str | None = None) -> list[Example]:
    """Examples of "resisc45", "shapes", "folder:PATH" or "jsonl:PATH". `prompt` overrides the
    dataset's template (`PROMPTS.get(name, RECOGNITION_PROMPT)`).

    >>> len(load_dataset("shapes", "train")), len(load_dataset("shapes", "test", seed=1))
    (400, 200)
    """
    kind, _, path = name.partition(":")
    if kind not in DATASETS:
        if knows(kind):
            return load(name, split, data_dir=data_dir, seed=seed, prompt=prompt)
        known = ", ".join([k + (":PATH" if k in ("folder", "jsonl") else "") for k in DATASETS]
                          + NAMES)
        raise DataError(f"Unknown dataset {name!r}; known datasets: {known}.")
    return DATASETS[kind](split, path or data_dir, seed,
                          prompt or PROMPTS.get(kind, RECOGNITION_PROMPT))

