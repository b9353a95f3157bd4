"""The command lines of ttrv.py and eval.py: settings checked, a fresh run directory, one run
per seed, the results; and how every run ends.

    python ttrv.py [flags]     # -> main(): harness/config.py checks the flags before torch loads
    python eval.py --model M   # -> eval_main()

Every ending says what happened in the run directory's status.json (complete, failed,
interrupted) and, on failure, on the terminal in one line naming what was saved.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from harness import config
from harness.config import parse_args


def main(argv=None) -> int:
    """The command line: checked settings, a fresh run directory, one run per seed, the results.

    Every ending says what happened in its run directory's status.json (complete, failed,
    interrupted) and, on failure, on the terminal in one line naming what was saved.
    """
    cfg = parse_args(argv)                           # before torch: --help and bad settings
    import numpy as np
    import torch
    from tqdm import tqdm

    import data
    import ttrv
    import vlm
    from harness import distributed, models, report, rundir
    if cfg.device == "auto":
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.save_dtype = cfg.save_dtype or ("bf16" if ttrv.uses_bf16(cfg) else "fp32")
    procs = distributed.Ranks() if distributed.init(cfg.device) else distributed.ONE
    main_rank = procs.rank == 0
    if not main_rank:
        cfg.quiet = True                      # rank 0 alone logs, marks and draws progress bars
    log = (lambda *a: None) if cfg.quiet else tqdm.write   # tqdm.write: above any progress bar
    models.quiet_transformers()
    if needs_hub(cfg.model, cfg.dataset, cfg.adapt_dataset, cfg.eval_dataset):
        models.work_offline_if_hub_unreachable(log)
    seeds = cfg.seeds or [cfg.seed]
    try:
        out = distributed.on_main(rundir.run_dir, cfg, log)
    except rundir.RunDirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    local = distributed.scratch_dir(out)      # ranks > 0 write only into a scratch directory
    if main_rank:
        rundir.mark(out, "running")
    error = None
    try:
        runs = [ttrv.run(dataclasses.replace(cfg, seed=s, seeds=None),
                         local / f"seed-{s}" if len(seeds) > 1 else local, log, procs)
                for s in seeds]
    except (data.DataError, vlm.ModelError) as e:
        error = str(e)
    except torch.cuda.OutOfMemoryError:
        error = ("out of GPU memory; lower --micro-batch, --prompts-per-step, --rollouts, "
                 "--max-new-tokens or --eval-batch-size, or pass --freeze-vision.")
    except KeyboardInterrupt:
        if main_rank:
            print(f"interrupted; {rundir.ending(out, 'interrupted')}", file=sys.stderr)
        return 130
    except BaseException as e:        # a bug: marked, then its traceback
        if main_rank:
            rundir.mark(out, "failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        distributed.remove_scratch(local, out)
    if not main_rank:
        return 1 if error else 0
    if error:
        print(f"error: {error}", file=sys.stderr)
        print(f"run failed; {rundir.ending(out, 'failed', error)}", file=sys.stderr)
        return 1
    method = "TTRV" if cfg.reward == "ttrv" else f"adapted ({cfg.reward} reward)"
    summary = report.summarize(runs)
    table = report.paper_table({cfg.eval_dataset or cfg.dataset: summary}, method=method)
    (out / "results.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(dict(summary, seeds=seeds), indent=2))
    plotted = report.plot_trajectory([r["trajectory"] for r in runs], out / "trajectory.png")
    for s, r in zip(seeds, runs):
        print(f"seed {s}:" if len(seeds) > 1 else "", report.run_table(r), sep="\n")
    if len(seeds) > 1:
        print(table)
    print(f"answer entropy of the vote on the {cfg.num_samples or 'all'} adaptation examples (same prompts, "
          f"before -> after, mean over seeds): "
          f"{np.mean([r['base']['answer_entropy'] for r in runs]):.3f} -> "
          f"{np.mean([r['adapted']['answer_entropy'] for r in runs]):.3f}")
    forced = [(r["base"]["letter_forced_accuracy"], r["adapted"]["letter_forced_accuracy"])
              for r in runs]
    if None not in forced[0]:
        print(f"letter-forced accuracy (argmax over the option letters, mean over seeds): "
              f"{100 * np.mean([b for b, _ in forced]):.2f} -> "
              f"{100 * np.mean([a for _, a in forced]):.2f}")
    rundir.mark(out, "complete")
    print(f"written to {out}")
    if plotted:
        print(f"Figure 1 (accuracy and answer entropy against the step): {out / 'trajectory.png'}")
    return 0


def needs_hub(model: str, *datasets) -> bool:
    """Whether the model or a dataset is named by a hub id (anything not built or read locally)."""
    local = ("shapes", "folder:", "jsonl:", "tiny-math")
    import vlm
    return ((model not in config.TINY_MODELS and not vlm._looks_local(model))
            or any(d and not d.startswith(local) for d in datasets))


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
    raise ModelError(f"{name} is a run directory without a saved model (it ran with "
                         "--no-save-model, or ended early); pass a model directory or hub id.")


def eval_main(argv=None) -> int:
    """eval.py's command line: greedy accuracy of a model (or a run's saved model)."""
    p = argparse.ArgumentParser(description="Greedy evaluation of a VLM on multiple-choice questions.")
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
    import torch

    import data
    import eval as evaluation
    import vlm
    from harness import models, presets
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
        result = evaluation.evaluate(model, processor, examples, batch_size=args.batch_size,
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
        evaluation.write_predictions(args.output, result)
    return 0


def command(main_fn=main) -> int:
    """What `python ttrv.py` and `python eval.py` run: main_fn on the command line's arguments;
    a Ctrl-C before any run directory exists ends in one line."""
    try:
        return main_fn()
    except KeyboardInterrupt:
        print("interrupted; nothing was saved.", file=sys.stderr)
        return 130
