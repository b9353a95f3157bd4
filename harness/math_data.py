"""TTRL's text benchmarks by name, and free-form math rows: text-only `Example`s (no image).

    load_dataset("math500")                 # hub download (main), or data_dir=a local copy
    load_dataset("gpqa-diamond", data_dir="gpqa_diamond.csv")
    load_dataset("jsonl:problems.jsonl")    # {"question", "answer"} rows: free-form math
    load_dataset("math500:level5")          # one difficulty level alone (split_level, at_level)
    load_dataset("mmlu-pro")                # 10-option multiple choice, letters A-J

A math question shows the bare problem (the model's chat template adds the rest, see vlm.py),
has no options, `answer` = the gold answer as text and kind "math" (graded by
math_answers.math_equal). GPQA-Diamond and MMLU-Pro are multiple choice, graded by letter.
A question keeps its difficulty level where the source has one (math500's `level`, 1-5; a
jsonl row's "level"), so results can be reported by level (harness/report.py).

Sources (repo, file, columns; confirmed from the dataset cards and public code that reads them;
revisions not pinned: "main"):
  math500       HuggingFaceH4/MATH-500 test.jsonl: problem, answer, unique_id (500 rows).
  aime24        Maxwell-Jia/AIME_2024 aime_2024_problems.parquet: ID, Problem, Solution, Answer
                (int; 30 rows; its order matches TTRL's file, methods-notes section 1).
  amc23         AI-MO/aimo-validation-amc data/train-*.parquet: id, problem, answer (a float,
                142.0 -> "142"), url; 83 rows of AMC12 2022 and 2023, TTRL's "AMC".
  gpqa-diamond  Idavidrein/gpqa gpqa_diamond.csv (gated: a token is needed): Question, Correct
                Answer, Incorrect Answer 1-3, Record ID; 198 rows.
  mmlu-pro      TIGER-Lab/MMLU-Pro data/test-*.parquet: question_id, question, options (up to
                10 strings), answer (a letter A-J), answer_index, category, ...; 12,032 rows.
TTRL trains and tests on the same file, so every split name reads it.

Choices (the papers are silent): GPQA's four options are shuffled with one random.Random(seed)
drawn in row order (TTRL's shuffle seed is unknown), shown as "A. ..." lines under the question
with GPQA_PROMPT (reconstructed, ours); MMLU-Pro keeps its options' order, shown the same way
(CHOICE_PROMPT; DARE's prompt is not published). A gold answer that math-verify cannot read ends
the load with the row named, before any model time.
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
import math
import numbers
import os
import random

from data import LETTERS, DataError, Example
from harness.hub import _download, _fill, read_rows

GPQA_PROMPT = ("{question}\n\n{options}\n\nAnswer with the letter of the correct option, "
               "within \\boxed{{}}.")
CHOICE_PROMPT = GPQA_PROMPT        # MMLU-Pro's, ours too
_GPQA_OPTIONS = ["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                 "Incorrect Answer 3"]


@dataclasses.dataclass(frozen=True)
class MathBenchmark:
    repo: str
    file: str                  # the data file's name (a glob) inside the repo
    id: str | None             # columns
    question: str
    answer: str
    gated: bool = False
    level: str | None = None   # the difficulty level's column, if any


MATH_BENCHMARKS = {
    "math500": MathBenchmark("HuggingFaceH4/MATH-500", "test.jsonl", "unique_id", "problem",
                             "answer", level="level"),
    "aime24": MathBenchmark("Maxwell-Jia/AIME_2024", "aime_2024_problems.parquet", "ID",
                            "Problem", "Answer"),
    "amc23": MathBenchmark("AI-MO/aimo-validation-amc", "train-*.parquet", "id", "problem",
                           "answer"),
    "gpqa-diamond": MathBenchmark("Idavidrein/gpqa", "gpqa_diamond.csv", "Record ID",
                                  "Question", "Correct Answer", gated=True),
    "mmlu-pro": MathBenchmark("TIGER-Lab/MMLU-Pro", "test-*.parquet", "question_id", "question",
                              "answer"),
}


def _token() -> str | None:
    """The Hugging Face token in use (HF_TOKEN or `hf auth login`), or None."""
    from huggingface_hub import get_token
    return get_token()


def _find(path: str, pattern: str) -> list[str]:
    """`path` itself if it is a file, else the files under it whose name matches `pattern`."""
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(root, f) for root, _, files in os.walk(path)
                  for f in files if fnmatch.fnmatch(f, pattern))


def _read(files: list[str], columns: list[str]) -> list[dict]:
    """Rows of .csv files (csv module) or .jsonl/.json/.parquet files (hub.read_rows)."""
    rows = []
    for f in files:
        if f.endswith(".csv"):
            with open(f, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in columns if c not in (reader.fieldnames or [])]
                if missing:
                    raise DataError(f"{f} lacks column(s) {missing}; it has {reader.fieldnames}.")
                rows += list(reader)
        else:
            rows += read_rows(f, "", columns)[0]
    return rows


def answer_text(value) -> str:
    """A gold answer as text: 142.0 -> "142", 7 -> "7", " \\frac{1}{2} " -> "\\frac{1}{2}"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


def _row_problem(question, answer) -> str | None:
    """What is wrong with a math row's question or answer, or None. The question: non-empty
    text. The answer (our choice): text, or a finite number (AIME's ints, AMC's floats), which
    answer_text writes as text (0.5 -> "0.5"); true / false, lists, objects, nan and inf are
    refused rather than turned into text that math-verify would still read."""
    if question is None or (isinstance(question, str) and not question.strip()):
        return f"{'no' if question is None else 'an empty'} question; write the problem as text"
    if not isinstance(question, str):
        return f"a question of type {type(question).__name__}; write the problem as text"
    if answer is None or isinstance(answer, str):
        return None
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return (f"an answer of type {type(answer).__name__} ({answer!r}); write the gold answer "
                "as text (e.g. \"\\\\frac{1}{2}\") or a number")
    if not math.isfinite(answer):
        return f"the answer {answer}; write the gold answer as text or a finite number"
    return None


def math_example(ex_id: str, question: str, answer, where: str,
                 prompt: str | None = None, level=None) -> Example:
    """A free-form math question; DataError (naming `where`) if its question is missing, empty
    or not text, or its answer is missing, neither text nor a finite number (_row_problem), or
    nothing math-verify can read."""
    from math_answers import is_math_answer
    problem = _row_problem(question, answer)
    if problem:
        raise DataError(f"{where} has {problem}.")
    gold = answer_text(answer)
    if not gold:
        raise DataError(f"{where} has no answer; every math question needs its gold answer.")
    if not is_math_answer(gold):
        raise DataError(f"{where} has answer {gold!r}, which math-verify cannot read; write it as "
                        "a number or LaTeX (e.g. \\frac{1}{2}).")
    text = str(question).strip()
    if prompt:
        text = _fill(prompt, {"question"}, question=text)
    return Example(ex_id, text, [], gold, gold, None, kind="math", level=level_text(level))


def level_text(value) -> str | None:
    """A difficulty level as text: 5 -> "5", "Level 5" -> "5" (the MATH files' spelling), None."""
    if value is None or isinstance(value, bool):
        return None
    text = answer_text(value)
    return text[len("level"):].strip() if text.lower().startswith("level") else text or None


def split_level(name: str) -> tuple[str, str | None]:
    """A dataset name and the level it asks for: "math500:level5" -> ("math500", "5"),
    "jsonl:p.jsonl:level3" -> ("jsonl:p.jsonl", "3"), "math500" -> ("math500", None).
    DataError for a benchmark name followed by anything else after ":" (before any download)."""
    head, sep, tail = name.rpartition(":")
    if sep and tail.lower().startswith("level") and tail[5:]:
        return head, tail[5:]
    kind, sep, rest = name.partition(":")
    if sep and kind in MATH_BENCHMARKS:
        raise DataError(f"{name!r}: {kind} takes no path after ':'; pass {kind}:levelN to keep one "
                        "difficulty level (e.g. math500:level5), or --data-dir for a local copy.")
    return name, None


def at_level(examples: list[Example], level: str, name: str) -> list[Example]:
    """The examples of one difficulty level; DataError (naming the levels there are) if none."""
    levels = sorted({e.level for e in examples if e.level is not None})
    if not levels:
        raise DataError(f"{name} gives no difficulty levels, so :level{level} cannot choose one; "
                        'drop :level (a jsonl row gives its level as "level").')
    kept = [e for e in examples if e.level == level]
    if not kept:
        raise DataError(f"{name} has no level-{level} questions; its levels are "
                        f"{', '.join(levels)}: pass one of them, e.g. {name}:level{levels[-1]}.")
    return kept


def choice_examples(rows: list[dict], b: MathBenchmark, name: str,
                    prompt: str | None = None) -> list[Example]:
    """MMLU-Pro rows -> lettered questions in the source's option order (up to 10: A-J); the
    answer letter checked against the options (and answer_index, where present)."""
    out = []
    for row in rows:
        options, letter = [str(o).strip() for o in row["options"] or []], str(row[b.answer])
        where = f"{name} question {row[b.id]}"
        if not 2 <= len(options) <= 26 or letter not in list(LETTERS[:len(options)]):
            raise DataError(f"{where} has answer {letter!r} for {len(options)} options; each row "
                            "needs 2 to 26 options and the letter of one of them.")
        if row.get("answer_index") is not None and LETTERS[row["answer_index"]] != letter:
            raise DataError(f"{where} has answer {letter} but answer_index {row['answer_index']}; "
                            "fix the row so the two agree.")
        block = "\n".join(f"{L}. {o}" for L, o in zip(LETTERS, options))
        text = _fill(prompt or CHOICE_PROMPT, {"question", "options"},
                     question=str(row[b.question]).strip(), options=block)
        out.append(Example(str(row[b.id]), text, options, letter,
                           options[LETTERS.index(letter)], None))
    return out


def gpqa_examples(rows: list[dict], seed: int = 0, prompt: str | None = None) -> list[Example]:
    """GPQA rows -> 4-way lettered questions, options shuffled by one random.Random(seed)."""
    rng, out = random.Random(seed), []
    for i, row in enumerate(rows):
        options = [str(row[c]).strip() for c in _GPQA_OPTIONS]
        order = list(range(4))
        rng.shuffle(order)                       # order[k] = which option sits at letter k
        shown = [options[k] for k in order]
        letter = LETTERS[order.index(0)]         # where the correct answer went
        block = "\n".join(f"{L}. {o}" for L, o in zip(LETTERS, shown))
        text = _fill(prompt or GPQA_PROMPT, {"question", "options"},
                     question=str(row["Question"]).strip(), options=block)
        out.append(Example(str(row.get("Record ID") or f"gpqa-{i:03d}"), text, shown, letter,
                           options[0], None))
    return out


def load_math(name: str, split: str = "test", data_dir: str | None = None, seed: int = 0,
              prompt: str | None = None) -> list[Example]:
    """A benchmark of MATH_BENCHMARKS from the hub (or `data_dir`: its file, or a folder holding
    it). `split` is not used: TTRL adapts and tests on the same file."""
    b = MATH_BENCHMARKS[name]
    if b.gated and not data_dir and not _token():
        raise DataError(f"{name} ({b.repo}) is gated: accept its terms on "
                        f"hf.co/datasets/{b.repo} and set HF_TOKEN (or run `hf auth login`), or "
                        "pass the downloaded file as --data-dir.")
    path = data_dir or _download(b.repo, "main", [f"*{b.file}"])
    files = _find(path, b.file)
    if not files:
        raise DataError(f"No {b.file} at {path}; pass the {b.repo} file or its folder.")
    columns = [c for c in (b.id, b.question, b.answer) if c]
    extra = {"gpqa-diamond": _GPQA_OPTIONS[1:],
             "mmlu-pro": ["options", "answer_index"]}.get(name, [])
    rows = _read(files, columns + extra)
    if name == "gpqa-diamond":
        examples = gpqa_examples(rows, seed, prompt)
    elif name == "mmlu-pro":
        examples = choice_examples(rows, b, name, prompt)
    else:
        examples = [math_example(str(r[b.id]), r[b.question], r[b.answer],
                                 f"{name} question {r[b.id]}", prompt,
                                 r.get(b.level) if b.level else None) for r in rows]
    if not examples:
        raise DataError(f"{path} holds no {name} questions.")
    return examples


def check_fits(processor, model, *datasets) -> None:
    """A DataError in one sentence when the questions of `datasets` do not suit the loaded model,
    checked before any evaluation or adaptation: a question with an image for a text-only model
    (its processor is its tokenizer, which would drop the image), images on some questions but
    not others, or a text-only question whose prompt (the chat template around it) fills the
    model's context (max_position_embeddings), leaving no room for an answer."""
    import vlm
    examples = list({id(e): e for d in datasets for e in d}.values())
    name = getattr(model.config, "name_or_path", "") or "the model"
    shown = [e for e in examples if e.source is not None]
    text = [e for e in examples if e.source is None]
    if shown and processor is vlm.tokenizer_of(processor):
        raise DataError(f"{name} is a text-only model, but question {shown[0].id} (and "
                        f"{len(shown) - 1} more) shows an image; pass a vision-language model, "
                        "or a dataset of text questions (e.g. tiny-math, jsonl: rows without an "
                        "image).")
    if shown and text:
        raise DataError(f"question {shown[0].id} shows an image but {text[0].id} does not; ttrv "
                        "needs one kind per dataset: give every question an image, or none.")
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    for i in range(0, len(text) if context else 0, 64):
        chunk = text[i:i + 64]
        lengths = vlm.prompt_inputs(processor, [None] * len(chunk),
                                    [e.question for e in chunk])["attention_mask"].sum(1)
        j = int(lengths.argmax())
        if lengths[j] >= context:
            raise DataError(f"question {chunk[j].id} is a prompt of {int(lengths[j])} tokens, but "
                            f"{name} reads at most {context} (its context), leaving no room for "
                            "an answer; shorten that question or leave it out.")
