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
import fnmatch
import functools
import io
import json
import math
import os
import random
import re
import string
from typing import Any, Callable
from urllib.parse import parse_qsl

from PIL import Image

from data import (DTD_PROMPT, LETTERS, RECOGNITION_PROMPT, DataError, Example, _open_zip,
                  display_name, make_choice_question)

# Reconstructed: the notes give AI2D/SEED/CRPE only as "lettered options with 'respond with only
# the corresponding option letter'" and MME as "<question> Please respond with only the
# corresponding option letter (A or B). ... Options: A. No  B. Yes"; shaped like the verbatim
# recognition prompt.
LETTERED_PROMPT = ("{question} Please respond with only the corresponding option letter "
                   "({letters}). Do not include any explanation or extra text. \n Options:\n"
                   "{options}")
# Appendix C verbatim up to "Question: ..."; the "(A) ..." lines are MathVista's own format.
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
FREEFORM_PROMPT = ("{question}\nPlease reason step by step, and put your final answer within "
                   "\\boxed{{}}.")
DTD_CLASSES = [  # tanganke/dtd README, ClassLabel names 0-46
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
    "crosshatched", "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy",
    "grid", "grooved", "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled",
    "matted", "meshed", "paisley", "perforated", "pitted", "pleated", "polka-dotted", "porous",
    "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained", "stratified", "striped",
    "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged"]


@dataclasses.dataclass
class EncodedExample(Example):
    """An `Example` whose `source` is an encoded image file's bytes, decoded by `image()`."""

    def image(self) -> Image.Image:
        try:
            img = Image.open(io.BytesIO(self.source))
            img.load()
            return img.convert("RGB")
        except (OSError, EOFError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"Cannot decode the image of {self.id} ({type(err).__name__}: {err});"
                            " the data file is damaged: download it again.") from err


def make_example(ex_id: str, question: str, options: list[str], answer: str | None,
                 label: str | None, image: Any) -> Example:
    """`image`: a PIL image, encoded bytes, the hub's {"bytes", "path"} struct, a path, a
    (zip, member) pair, or a one-element list of one of these."""
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    if isinstance(image, dict):
        image = image.get("bytes") or image.get("path")
    if isinstance(image, (bytes, bytearray)):
        return EncodedExample(ex_id, question, options, answer, label, bytes(image))
    if not isinstance(image, (str, tuple, Image.Image)):
        raise DataError(f"{ex_id} has no usable image ({type(image).__name__}); check the image "
                        "column.")
    return Example(ex_id, question, options, answer, label, image)


def _fill(template: str, allowed: set[str], **values) -> str:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if not fields <= allowed:
        raise DataError(f"The prompt template has fields {sorted(fields)}, but this dataset fills "
                        f"only {sorted(allowed)}; fix the template.")
    return template.format(**values)


def letters_phrase(n: int) -> str:
    """'A or B', 'A, B, or C', 'A, B, C, or D' (as the recognition prompt writes it)."""
    return "A or B" if n == 2 else ", ".join(LETTERS[:n - 1]) + ", or " + LETTERS[n - 1]


def lettered_example(ex_id: str, question: str, options: list, index: int, image: Any,
                     prompt: str = LETTERED_PROMPT, style: str = "{}. {}") -> Example:
    """A question keeping the dataset's own options; `index` = the correct one's position."""
    options = [str(o).strip() for o in options]
    if not 2 <= len(options) <= 26 or not 0 <= index < len(options):
        raise DataError(f"{ex_id}: {len(options)} options, answer index {index}; a question needs "
                        "2-26 options with the answer among them.")
    block = "\n".join(style.format(L, o) for L, o in zip(LETTERS, options))
    text = _fill(prompt, {"question", "options", "letters"}, question=str(question).strip(),
                 options=block, letters=letters_phrase(len(options)))
    return make_example(ex_id, text, options, LETTERS[index], options[index], image)


def answer_index(answer: Any, options: list, fmt: str = "auto") -> int:
    """Position of `answer` in `options`, read as fmt "index" (0-based), "letter", "text" (exactly
    one option's text) or "auto" (an int is an index; else text, then letter, then digits)."""
    text = str(answer).strip()
    if fmt == "auto" and isinstance(answer, int) and not isinstance(answer, bool):
        fmt = "index"
    for kind in ["text", "letter", "index"] if fmt == "auto" else [fmt]:
        if kind == "text":
            hits = [i for i, o in enumerate(options) if str(o).strip() == text]
            i = hits[0] if len(hits) == 1 else -1
        elif kind == "letter":
            i = LETTERS.index(text.upper()) if len(text) == 1 and text.upper() in LETTERS else -1
        elif kind == "index":
            i = int(text) if text.isdigit() else -1
        else:
            raise DataError(f"answer_format {fmt!r} is not one of auto, letter, index, text.")
        if 0 <= i < len(options):
            return i
    raise DataError(f"Answer {answer!r} names none of the {len(options)} options "
                    f"(answer_format={fmt}); check the answer column.")


def recognition_examples(rows: list[dict], image: str, label: str, names: list[str] | None,
                         seed: int, prompt: str, prefix: str) -> list[Example]:
    """Image + class rows -> 4-way questions (true class + 3 others, slot uniform), one
    random.Random(seed) drawn in row order as data.py does; classes = `names` or those seen."""
    if not names and any(isinstance(r[label], int) for r in rows):
        raise DataError(f"Column {label!r} holds class numbers but no class names came with it (no "
                        "ClassLabel in the parquet); pass names=FILE, one name a line.")
    labels = [names[r[label]] if isinstance(r[label], int) else str(r[label]) for r in rows]
    classes, rng, out = names or sorted(set(labels)), random.Random(seed), []
    for i, (row, cls) in enumerate(zip(rows, labels)):
        question, options, answer = make_choice_question(cls, classes, rng, prompt)
        out.append(make_example(f"{prefix}-{i:05d}", question, options, answer, display_name(cls),
                                row[image]))
    return out


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


# ------------------------------------------------------------------------- generic hub loader

HUB_KEYS = {"image", "question", "options", "answer", "answer_format", "label", "names", "id",
            "where", "split", "revision"}


def parse_hub_name(name: str) -> tuple[str, dict[str, str]]:
    """'hub:owner/name?image=img&split=dev' -> ('owner/name', {'image': 'img', 'split': 'dev'})."""
    repo, _, query = name.removeprefix("hub:").partition("?")
    try:
        columns = dict(parse_qsl(query, strict_parsing=bool(query)))
    except ValueError:
        columns = {"?": query}
    unknown = sorted(set(columns) - HUB_KEYS)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo) or unknown:
        raise DataError(f"Cannot read hub dataset {name!r} (unknown keys: {unknown}); write "
                        f"hub:OWNER/NAME?key=value&... with keys {', '.join(sorted(HUB_KEYS))}.")
    return repo, columns


def hub_examples(rows: list[dict], columns: dict[str, str],
                 names: dict[str, list[str]] | None = None, seed: int = 0,
                 prompt: str | None = None, prefix: str = "hub",
                 style: str = "{}. {}") -> list[Example]:
    """Rows -> Examples by a column mapping (keys as in the module docstring)."""
    c = {"image": "image", "question": "question", "answer": "answer", **columns}
    if "where" in c:
        col, _, value = c["where"].partition(":")
        rows = [r for r in rows if str(r.get(col)) == value]
    if "label" in c:
        classes = (names or {}).get(c["label"])
        if "names" in c:
            with open(c["names"], encoding="utf-8") as f:
                classes = [line.strip() for line in f if line.strip()]
        return recognition_examples(rows, c["image"], c["label"], classes, seed,
                                    prompt or RECOGNITION_PROMPT, prefix)
    ids = [str(r[c["id"]]) if "id" in c else f"{prefix}-{i:05d}" for i, r in enumerate(rows)]
    if "options" not in c:
        return [make_example(i, _fill(prompt or FREEFORM_PROMPT, {"question"},
                                      question=str(r[c["question"]]).strip()),
                             [], str(r[c["answer"]]), str(r[c["answer"]]), r[c["image"]])
                for i, r in zip(ids, rows)]
    cols, out = c["options"].split(","), []
    for i, r in zip(ids, rows):
        options = list(r[cols[0]]) if len(cols) == 1 else [r[k] for k in cols]
        options = [o for o in options if o is not None and str(o).strip()]  # blank D, E, ...
        index = answer_index(r[c["answer"]], options, c.get("answer_format", "auto"))
        out.append(lettered_example(i, r[c["question"]], options, index, r[c["image"]],
                                    prompt or LETTERED_PROMPT, style))
    return out


def _needed(columns: dict[str, str]) -> list[str]:
    """The data columns a mapping reads."""
    c = {"image": "image", "question": "question", "answer": "answer", **columns}
    keys = ["image", "label"] if "label" in c else ["id", "image", "question", "options", "answer"]
    wanted = [v for k in keys if k in c for v in c[k].split(",")]
    return list(dict.fromkeys(wanted + ([c["where"].partition(":")[0]] if "where" in c else [])))


def _download(repo: str, revision: str, patterns: list[str]) -> str:
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(repo_id=repo, repo_type="dataset", revision=revision,
                                 allow_patterns=patterns)
    except Exception as err:  # offline, hub down, no access: all mean "get the files another way"
        include = " ".join(f"--include '{p}'" for p in patterns)
        raise DataError(f"Could not download {repo} from the hub ({type(err).__name__}); "
                        f"download it elsewhere (hf download {repo} --repo-type dataset --revision "
                        f"{revision} {include} --local-dir DIR) and pass DIR as --data-dir DIR "
                        "(data_dir=DIR).") from err


def _split_files(path: str, split: str) -> list[str]:
    """`path` itself if a file, else its {split}-*.parquet / {split}/*.parquet / {split}.parquet
    / {split}.jsonl / {split}.json files (sorted, recursively)."""
    if os.path.isfile(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files)
                  if fnmatch.fnmatch(f, f"{split}-*.parquet")
                  or f in (f"{split}.parquet", f"{split}.jsonl", f"{split}.json")
                  or (os.path.basename(root) == split and f.endswith(".parquet"))]
    return found


def read_rows(path: str, split: str, columns: list[str], image: str | None = None
              ) -> tuple[list[dict], dict[str, list[str]]]:
    """A split's rows (dicts of `columns`) and the class names of its ClassLabel columns."""
    files = _split_files(path, split) if os.path.exists(path) else []
    if not files:
        raise DataError(f"No {split} data at {path} (looked for {split}-*.parquet, "
                        f"{split}/*.parquet, {split}.jsonl); pass the downloaded dataset folder.")
    rows, names = [], {}
    for f in files:
        if f.endswith((".jsonl", ".json")):
            with open(f, encoding="utf-8") as fh:
                part = json.load(fh) if f.endswith(".json") else [
                    json.loads(line) for line in fh if line.strip()]
            for r in part:  # image paths are relative to the file
                if image and isinstance(r.get(image), str):
                    r[image] = os.path.join(os.path.dirname(os.path.abspath(f)), r[image])
            rows += part
            continue
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise DataError("Reading parquet files needs pyarrow: pip install pyarrow (or give "
                            "the rows as a .jsonl file).") from err
        schema = pq.read_schema(f)
        if [c for c in columns if c not in schema.names]:
            raise DataError(f"{f} lacks column(s) {[c for c in columns if c not in schema.names]}"
                            f"; it has {schema.names}.")
        info = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
        names.update({col: list(feat["names"]) for col, feat in
                      info.get("info", {}).get("features", {}).items()
                      if isinstance(feat, dict) and feat.get("names")})
        rows += pq.read_table(f, columns=columns).to_pylist()
    missing = [c for c in columns if rows and c not in rows[0]]
    if missing:
        raise DataError(f"The rows at {path} lack column(s) {missing}.")
    return rows, names


def load_hub(repo: str, split: str = "test", data_dir: str | None = None, seed: int = 0,
             prompt: str | None = None, *, columns: dict[str, str] | None = None
             ) -> list[Example]:
    """A hub dataset of parquet shards (or a local copy / .jsonl) by a column mapping."""
    c = dict(columns or {})
    split, revision = c.pop("split", None) or split, c.pop("revision", "main")
    path = data_dir or _download(repo, revision, [f"*{split}-*.parquet", f"*{split}/*.parquet"])
    rows, names = read_rows(path, split, _needed(c), c.get("image", "image"))
    examples = hub_examples(rows, c, names, seed, prompt, repo.split("/")[-1])
    if not examples:
        raise DataError(f"{repo} split {split} gave no questions; check the where= filter.")
    return examples


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
