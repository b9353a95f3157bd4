"""eval.py's command line: greedy accuracy of a model, or of a run's saved model.

    python eval.py --model runs/<run>/model --dataset shapes     # -> main(), through cli.command

Its model, data and evaluation flags are ttrv.py's (EVAL_FIELDS: one definition, Config's),
checked the same way before anything loads (exit code 2, one sentence).
"""
import argparse
import dataclasses
import sys
from pathlib import Path

from harness.config import (TINY_MODELS, TINY_PRESETS, Config, _add_flag, bf16_compute,
                            check_device, check_numbers)


# eval.py's flags: the same fields (one definition, Config's) as ttrv.py's; field -> the flag
# eval.py has always had for it, kept as an alias.
EVAL_FIELDS = dict(protocol=None, model=None, device=None, precision=None, allow_cpu=None, dataset=None,
                   data_dir=None, data_seed="--seed", max_image_side=None, num_workers=None,
                   eval_limit="--limit", eval_batch_size="--batch-size",
                   eval_max_new_tokens="--max-new-tokens")


def parse_eval_args(argv=None) -> argparse.Namespace:
    """eval.py's command line: ttrv.py's model, data and evaluation flags (EVAL_FIELDS), plus
    --split and --output; checked like ttrv.py's (exit code 2, one sentence, before loading).
    eval_max_new_tokens is always filled (ttrv.py's --max-new-tokens default when unset)."""
    parser = argparse.ArgumentParser(
        description="Greedy evaluation of a VLM on multiple-choice questions.",
        usage="%(prog)s --model M [options]   (see --help)")
    groups, fields = {}, {f.name: f for f in dataclasses.fields(Config)}
    presets = dict(eval_max_new_tokens=TINY_PRESETS["max_new_tokens"])
    overrides = dict(  # where eval.py's help differs from ttrv.py's
        model=dict(required=True, help="hub id, local model directory, a run directory (uses "
                   "its model/), or 'tiny' / 'tiny-letters'"),
        protocol=dict(help="paper: the paper's prompts; official: the official runs' prompt text "
                      "and option spelling"),
        dataset=dict(help="resisc45, shapes, folder:PATH, jsonl:PATH, ... (default: shapes)"),
        allow_cpu=dict(help="evaluate a >1B model on the CPU anyway (very slow)"),
        eval_max_new_tokens=dict(help="longest response, in tokens (default: "
                                 f"{Config.max_new_tokens}; {presets['eval_max_new_tokens']} "
                                 "for --model tiny)"))
    for name, alias in EVAL_FIELDS.items():
        _add_flag(parser, groups, fields[name], presets, alias, **overrides.get(name, {}))
    groups["data"].add_argument("--split", default="test", help="the split to evaluate")
    groups["evaluation"].add_argument("--output", default=None,
                                      help="write per-example predictions (JSONL) here")
    known, _ = parser.parse_known_args(argv)
    parser.set_defaults(eval_max_new_tokens=presets["eval_max_new_tokens"]
                        if known.model in TINY_MODELS else Config.max_new_tokens)
    args = parser.parse_args(argv)
    problem = check_numbers(vars(args)) or check_device(args.device)
    if problem:
        parser.error(problem)
    return args


def model_path(name: str, log=print) -> str:
    """`name`, or the saved model inside it when `name` is a ttrv run directory (runs/X).

    A run directory holds config.json of the run, not of a model; its model is runs/X/model.
    """
    from vlm import ModelError
    run = Path(name)
    if not (run / "metrics.jsonl").exists() and not (run / "status.json").exists():
        return name                                      # not a run directory
    if (run / "model").is_dir():
        log(f"note: {name} is a run directory; evaluating its saved model {run / 'model'}")
        return str(run / "model")
    seeds = sorted(run.glob("seed-*/model"))
    if seeds:
        raise ModelError(f"{name} holds one model per seed; pass one of them, e.g. "
                         f"--model {seeds[0]}.")
    if (run / "adapter").is_dir() or any(run.glob("seed-*/adapter")):
        raise ModelError(f"{name} holds LoRA adapters only (it ran with --lora-rank, without "
                         "--merge-lora); rerun with --merge-lora for a model eval.py loads.")
    raise ModelError(f"{name} is a run directory without a saved model (it ran with "
                     "--no-save-model, or ended early); pass a model directory or hub id.")


def main(argv=None) -> int:
    """eval.py's command line: greedy accuracy of a model (or a run's saved model).

    Its model, data and evaluation flags are ttrv.py's (EVAL_FIELDS), checked the same way
    before anything loads; --limit, --batch-size, --max-new-tokens and --seed are kept as
    aliases of --eval-limit, --eval-batch-size, --eval-max-new-tokens and --data-seed.
    """
    args = parse_eval_args(argv)
    import functools

    import torch

    import data
    import eval as evaluation
    import vlm
    from harness import batches, cli, math_data, models, presets, tiny, tiny_math
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.num_workers is None:
        args.num_workers = batches.default_workers(args.device)
    cli.use_tf32(args.device)
    models.quiet_transformers()
    try:
        name = args.model
        if name == "tiny-math":
            name = str(tiny_math.tiny_math_path())
        elif name in TINY_MODELS:
            name = str(tiny.tiny_model_path(name))
        name = model_path(name)
        models.check_local(name)                 # before the data and the model load
        if cli.needs_hub(name, args.dataset):
            models.work_offline_if_hub_unreachable()
        examples = presets.load_dataset(args.dataset, args.split, data_dir=args.data_dir,
                                        seed=args.data_seed, protocol=args.protocol,
                                        max_image_side=args.max_image_side)[:args.eval_limit]
        # fp32 weights under bf16 autocast: the computation of ttrv.py's own evaluations
        bf16 = bf16_compute(args.precision, args.device)
        model, processor = models.load(models.resolve_name(name), args.device, torch.float32,
                                       allow_cpu=args.allow_cpu)
        math_data.check_fits(processor, model, examples)      # images for a text model, ...
        model.eval()
        result = evaluation.evaluate(
            model, processor, examples, batch_size=args.eval_batch_size,
            max_new_tokens=args.eval_max_new_tokens,
            prepare=functools.partial(batches.prompt_batches, num_workers=args.num_workers),
            autocast=torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16))
    except (data.DataError, vlm.ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BaseException as e:
        if not cli.stopping(e):
            raise
        print(f"{cli._how(e)}; nothing was written.", file=sys.stderr)
        return 128 + cli._signal_number(e)
    print(f"accuracy {result.accuracy:.4f} ({result.correct}/{result.total}), "
          f"unparseable {result.unparseable}")
    if args.output:
        evaluation.write_predictions(args.output, result)
    return 0
