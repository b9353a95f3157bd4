"""Greedy evaluation of a VLM on multiple-choice questions: the paper's accuracy numbers.

    python eval.py --model runs/<run>/model --dataset shapes
    python eval.py --model Qwen/Qwen2.5-VL-3B-Instruct --dataset resisc45 --data-dir NWPU-RESISC45.zip

The paper evaluates by greedy decoding on the whole test set, before and after adaptation
(Appendix A). Prompts are batched with left padding; a response counts as correct when the
option letter extracted from it (rewards.extract_choice) is the right one, and as unparseable
when no letter can be extracted. Counting questions (no options, e.g. Capture) are scored by
1 - symmetric percentage error on the extracted number (data.count_score).
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from harness import config
import data
import grpo
from harness import models
from harness import presets
import rewards
import vlm


@dataclass
class EvalResult:
    accuracy: float            # mean score: accuracy, or 1 - sMAPE for counting questions
    correct: float
    total: int
    unparseable: int
    predictions: list[dict] = field(repr=False)  # one dict per example, in dataset order
    letter_forced: float | None = None  # see letter_forced_accuracy; None: not defined here

    @classmethod
    def of(cls, predictions: list[dict]) -> "EvalResult":
        """The sums over per-example predictions (also over all ranks' gathered predictions)."""
        correct = sum(p["correct"] for p in predictions)
        forced = [p.get("letter_forced") for p in predictions]
        return cls(correct / max(len(predictions), 1), correct, len(predictions),
                   sum(p["prediction"] is None for p in predictions), predictions,
                   None if not forced or None in forced else sum(forced) / len(forced))


@torch.no_grad()
def evaluate(model, processor, examples, *, batch_size: int = 32, max_new_tokens: int = 1024,
             autocast=None, progress: bool = True, desc: str = "eval") -> EvalResult:
    """Greedy answers for every example; accuracy over all of them (unparseable = wrong).

    The same generate call keeps the option letters' logits of its first step, so the
    letter-forced accuracy (`EvalResult.letter_forced`) costs no second forward.
    """
    device = next(model.parameters()).device
    end_ids, pad_id = vlm.end_token_ids(model, processor), vlm.pad_token_id(processor)
    letters = letter_token_ids(processor, examples)                               # [K] or None
    predictions = []
    for start in tqdm(range(0, len(examples), batch_size), desc=desc, disable=not progress,
                      leave=False):
        batch = examples[start:start + batch_size]
        inputs = vlm.to_device(vlm.prompt_inputs(processor, [e.image() for e in batch],
                                                 [e.question for e in batch]), device)
        with autocast or torch.autocast(device.type, enabled=False):
            out = grpo.sample(model, inputs, temperature=0.0, top_p=1.0,
                              max_new_tokens=max_new_tokens, eos_token_ids=end_ids,
                              pad_token_id=pad_id, first_step_ids=letters,
                              suppress_token_ids=vlm.placeholder_token_ids(model))
        ids, first = out if letters is not None else (out, None)  # [B, T], [B, K]
        for i, (example, text) in enumerate(zip(batch, vlm.decode(processor, ids))):
            forced = {} if first is None else dict(letter_forced=forced_correct(first[i], example))
            predictions.append(dict(id=example.id, response=text, answer=example.answer,
                                    **score(text, example), **forced))
    return EvalResult.of(predictions)


def letter_token_ids(processor, examples) -> list[int] | None:
    """The token ids of the option letters A, B, ... (as many as the most options), or None
    when a question has no options (counting) or a letter is not a single token."""
    if not examples or any(not e.options for e in examples):
        return None
    ids = [processor.tokenizer.encode(letter, add_special_tokens=False)
           for letter in data.LETTERS[:max(len(e.options) for e in examples)]]
    return None if any(len(i) != 1 for i in ids) else [i[0] for i in ids]


def forced_correct(letter_logits, example) -> bool:
    """Whether the argmax over this question's own option letters' logits [K] is its answer."""
    return data.LETTERS[int(letter_logits[:len(example.options)].argmax())] == example.answer


@torch.no_grad()
def letter_forced_accuracy(model, processor, examples, *, batch_size: int = 32,
                           autocast=None) -> float | None:
    """Accuracy when the model must pick an option letter: the argmax over the option letters'
    logits at the first response position (no decoding, so no chance to answer off-format).

    Greedy accuracy below this is lost to format, not to knowledge. None when a question has no
    options (counting) or an option letter is not a single token of this tokenizer. `evaluate`
    gets the same number from its own decode (EvalResult.letter_forced); this one needs no
    decode at all.
    """
    letters = letter_token_ids(processor, examples)
    if letters is None:
        return None
    letters = torch.tensor(letters)                                              # [K]
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        inputs = vlm.to_device(vlm.prompt_inputs(processor, [e.image() for e in batch],
                                                 [e.question for e in batch]), device)
        with autocast or torch.autocast(device.type, enabled=False):
            logits = model(**inputs, logits_to_keep=1).logits[:, -1]   # [B, V], left-padded
        choice = logits.float()[:, letters.to(device)]                               # [B, K]
        correct += sum(forced_correct(row, example) for example, row in zip(batch, choice))
    return correct / len(examples)


def score(text: str, example) -> dict:
    """The extracted prediction and its score: 1/0 for multiple choice; for a counting question
    (no options) 1 - symmetric percentage error, whose mean over a dataset is 1 - sMAPE."""
    if data.is_counting(example):
        number = rewards.extract_number(text)
        return dict(prediction=number, correct=data.count_score(number, float(example.answer)))
    choice = rewards.extract_choice(text, num_options=len(example.options))
    return dict(prediction=choice, correct=choice == example.answer)


def write_predictions(path, result: EvalResult) -> None:
    with open(path, "w") as f:
        for p in result.predictions:
            f.write(json.dumps(p) + "\n")


def needs_hub(model: str, *datasets) -> bool:
    """Whether the model or a dataset is named by a hub id (anything not built or read locally)."""
    local = ("shapes", "folder:", "jsonl:")
    return ((model != "tiny" and not vlm._looks_local(model))
            or any(d and not d.startswith(local) for d in datasets))


def model_path(name: str, log=print) -> str:
    """`name`, or the saved model inside it when `name` is a ttrv run directory (runs/X).

    A run directory holds config.json of the run, not of a model; its model is runs/X/model.
    """
    run = Path(name)
    if not (run / "metrics.jsonl").exists() and not (run / "status.json").exists():
        return name                                      # not a run directory
    if (run / "model").is_dir():
        log(f"note: {name} is a run directory; evaluating its saved model {run / 'model'}")
        return str(run / "model")
    seeds = sorted(run.glob("seed-*/model"))
    if seeds:
        raise vlm.ModelError(f"{name} holds one model per seed; pass one of them, e.g. "
                             f"--model {seeds[0]}.")
    raise vlm.ModelError(f"{name} is a run directory without a saved model (it ran with "
                         "--no-save-model, or ended early); pass a model directory or hub id.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True,
                   help="hub id, local model directory, or a run directory (uses its model/)")
    p.add_argument("--dataset", default="shapes", help="resisc45, shapes, folder:PATH, jsonl:PATH")
    p.add_argument("--data-dir", default=None, help="local copy of the dataset (resisc45: the zip)")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0, help="seed that fixes the questions' options")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                   help="auto: cuda when available")
    p.add_argument("--allow-cpu", action="store_true",
                   help="evaluate a >1B model on the CPU anyway (very slow)")
    p.add_argument("--output", default=None, help="write per-example predictions (JSONL) here")
    args = p.parse_args(argv)
    for name in ("limit", "batch_size", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"{config.flag(name)} {value} is out of range; pass an integer >= 1.")
    problem = config.check_device(args.device)
    if problem:
        p.error(problem)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    models.quiet_transformers()
    try:
        name = model_path(args.model)
        if needs_hub(name, args.dataset):
            models.work_offline_if_hub_unreachable()
        examples = presets.load_dataset(args.dataset, args.split, data_dir=args.data_dir,
                                        seed=args.seed)[:args.limit]
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
        model, processor = vlm.load(models.resolve_name(name), args.device, dtype,
                                   allow_cpu=args.allow_cpu)
        model.eval()
        result = evaluate(model, processor, examples, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens)
    except (data.DataError, vlm.ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was written.", file=sys.stderr)
        return 130
    print(f"accuracy {result.accuracy:.4f} ({result.correct}/{result.total}), "
          f"unparseable {result.unparseable}")
    if args.output:
        write_predictions(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
