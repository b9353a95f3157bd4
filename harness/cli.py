"""The command line of ttrv.py: settings checked, a fresh run directory, one run per seed
(harness/run.py), the results; and how every run ends (also eval.py's: harness/eval_cli.py).

    python ttrv.py [flags]     # -> main(): harness/config.py checks the flags before torch loads
    python eval.py --model M   # -> eval_cli.main()

Every ending says what happened in the run directory's status.json (complete, failed,
interrupted) and, on failure, on the terminal in one line naming what was saved. SIGTERM (what a
cluster scheduler or torchrun sends to stop a job) ends like Ctrl-C, with exit code 143.
"""

import contextlib
import dataclasses
import json
import shutil
import signal
import sys
from pathlib import Path

from harness import config, rundir
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

    import vlm
    from harness import batches, distributed, models, precision, processes, report, run
    if cfg.device == "auto":
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.num_workers is None:
        cfg.num_workers = batches.default_workers(cfg.device)
    use_tf32(cfg.device)
    cfg.save_dtype = cfg.save_dtype or ("bf16" if precision.uses_bf16(cfg) else "fp32")
    cfg.micro_batch = config.micro_batch_for(cfg)       # 8 rows on a GPU when unset
    procs = processes.Ranks() if distributed.init(cfg.device) else processes.ONE
    main_rank = procs.rank == 0
    if not main_rank:
        cfg.quiet = True                      # rank 0 alone logs, marks and draws progress bars
    log = (lambda *a: None) if cfg.quiet else tqdm.write   # tqdm.write: above any progress bar
    models.quiet_transformers()
    try:                                      # a model path that cannot be a model: no run dir
        if cfg.model not in config.TINY_MODELS:
            models.check_local(cfg.model)
    except vlm.ModelError as e:
        if main_rank:
            print(f"error: {e}", file=sys.stderr)
        return 1
    if cfg.precision == "auto" and cfg.device == "cuda" and not precision.uses_bf16(cfg):
        log("note: this GPU has no bf16 (compute capability below 8.0); computing in fp32.")
    if needs_hub(cfg.model, cfg.dataset, cfg.adapt_dataset, cfg.eval_dataset):
        models.work_offline_if_hub_unreachable(log)
    seeds = cfg.seeds or [cfg.seed]
    try:
        out = distributed.on_main(rundir.run_dir, cfg, log)
    except rundir.RunDirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    local = distributed.scratch_dir(out)      # ranks > 0 write only into a scratch directory
    error = None
    shared = {}                     # the base evaluation, run once for all seeds (run.run)
    try:
        runs = [run.run(dataclasses.replace(cfg, seed=s, seeds=None),
                        local / f"seed-{s}" if len(seeds) > 1 else local, log, procs,
                        shared=shared)
                for s in seeds]
        if main_rank:
            table, plotted = _write_results(out, cfg, runs, seeds)
    except BaseException as e:
        _hold_stop_signals()                  # the ending is under way (see sigterm_interrupts)
        kind, error = _classify(e, procs, local)
        if kind == "interrupted":
            if main_rank:
                print(f"{_how(e)}; {rundir.ending(out, 'interrupted')}", file=sys.stderr)
            return 128 + _signal_number(e)
        if kind == "bug":                     # marked, then its traceback
            if main_rank:
                rundir.mark(out, "failed", error)
            raise
    finally:
        distributed.remove_scratch(local, out)
    if not main_rank:
        return 1 if error else 0
    if error:
        return _failed(out, error)
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
    print(f"written to {out}")
    if plotted:
        print(f"Figure 1 (accuracy and answer entropy against the step): {out / 'trajectory.png'}")
    return 0


def _write_results(out, cfg, runs, seeds):
    """results.md, summary.json and trajectory.png of the finished runs, then status complete;
    (the paper table, whether the figure was drawn)."""
    from harness import report
    method = "TTRV" if cfg.reward == "ttrv" else f"adapted ({cfg.reward} reward)"
    summary = report.summarize(runs)
    table = report.paper_table({cfg.eval_dataset or cfg.dataset: summary}, method=method)
    extra = [(f"Sampled evaluation (percent, mean over seeds): avg@K, maj@K, unbiased pass@k; "
              "maj@N of the votes: the base model's N rollouts, drawn as adaptation draws them",
              report.sampled_table(runs)),
             ("By difficulty level (greedy accuracy in percent, mean response length in "
              "tokens, mean over seeds)", report.level_table(runs))]
    sections = [table] + [f"{title}:\n\n{body}" for title, body in extra if body]
    (out / "results.md").write_text("\n\n".join(sections) + "\n")
    (out / "summary.json").write_text(json.dumps(dict(summary, seeds=seeds), indent=2))
    plotted = report.plot_trajectory([r["trajectory"] for r in runs], out / "trajectory.png")
    rundir.mark(out, "complete")
    return table, plotted


def _failed(out, error) -> int:
    """A run that failed with `error` (one sentence): said, then what its directory kept."""
    print(f"error: {error}", file=sys.stderr)
    if out.is_dir():                          # else it was removed (the error says why)
        print(f"run failed; {rundir.ending(out, 'failed', error)}", file=sys.stderr)
    return 1


def _classify(e, procs, out):
    """How the runs ended on exception `e`: ("failed", one sentence), ("interrupted", None) or
    ("bug", "Type: message"). Under torchrun another process's error stops this one too (its
    collectives fail, or torchrun sends SIGTERM): then this one ends with that error, not with
    how it was stopped; its own error is left for the others (procs.publish_error). A run
    directory `out` removed or on a full disk is the error (rundir.write_problem)."""
    import torch

    import data
    import vlm
    if isinstance(e, (data.DataError, vlm.ModelError)):
        return "failed", procs.publish_error(str(e))
    problem = None if isinstance(e, KeyboardInterrupt) else rundir.write_problem(e, out)
    if problem:
        return "failed", procs.publish_error(problem)
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "failed", procs.publish_error(
            "out of GPU memory; lower --micro-batch, --prompts-per-step, --rollouts, "
            "--max-new-tokens or --eval-batch-size, or pass --freeze-vision.")
    peer = procs.peer_error()
    if peer:
        return "failed", peer
    if isinstance(e, KeyboardInterrupt) or _STOPPED:
        return "interrupted", None
    return "bug", procs.publish_error(f"{type(e).__name__}: {e}")


def needs_hub(model: str, *datasets) -> bool:
    """Whether the model or a dataset is named by a hub id (anything not built or read locally)."""
    local = ("shapes", "folder:", "jsonl:", "tiny-math")
    import vlm
    return ((model not in config.TINY_MODELS and not vlm._looks_local(model))
            or any(d and not d.startswith(local) for d in datasets))


def stopping(e) -> bool:
    """Whether exception `e` is a stop (Ctrl-C, or any exception once SIGTERM arrived)."""
    return isinstance(e, KeyboardInterrupt) or _STOPPED


def use_tf32(device: str) -> None:
    """TF32 tensor cores for the float32 matmuls on CUDA (torch's "high" float32 matmul
    precision; cuDNN's convolutions allow TF32 by default): the one place this is set, at the
    start of ttrv.py and eval.py. bf16 autocast is unaffected; an fp32 matmul rounds its inputs
    to TF32's 10 mantissa bits (our choice: the speed of the fp32 parts, e.g. --precision fp32)."""
    if device.startswith("cuda"):
        import torch
        torch.set_float32_matmul_precision("high")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C's KeyboardInterrupt."""


_STOPPED = False   # a stop signal arrived (then any exception ends as an interruption)
_HOLD = False      # the run is already ending: a stop signal no longer interrupts it


def _hold_stop_signals():
    global _HOLD
    _HOLD = True


def _how(e) -> str:
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"


def _signal_number(e) -> int:
    return signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT


@contextlib.contextmanager
def sigterm_interrupts():
    """SIGTERM raises `Terminated` (a KeyboardInterrupt) while inside, so a scheduler's stop
    ends the run like Ctrl-C: marked interrupted, one line. Once a run is ending on an error,
    a SIGTERM no longer interrupts its ending (torchrun sends one to every process as soon as
    one of them exits with an error). The old handler is put back after. Outside the main
    thread (where signals cannot be handled) it does nothing."""
    global _STOPPED, _HOLD
    _STOPPED = _HOLD = False

    def handler(signum, frame):
        global _STOPPED
        _STOPPED = True
        if not _HOLD:
            raise Terminated()
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:                                  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def ended(out: Path, e: BaseException) -> int:
    """The exit code of a one-process run in `out` that ended on exception `e` (grpo_tta.py),
    after one line on stderr and status.json marked: Ctrl-C or SIGTERM ends interrupted; a
    DataError, ModelError, removed run directory or full disk fails in one sentence (a directory
    that kept nothing is removed, silently); anything else is a bug: marked failed, re-raised."""
    import data
    import vlm
    _hold_stop_signals()
    if isinstance(e, KeyboardInterrupt) or _STOPPED:
        print(f"{_how(e)}; {rundir.ending(out, 'interrupted')}", file=sys.stderr)
        return 128 + _signal_number(e)
    known = isinstance(e, (data.DataError, vlm.ModelError))
    error = str(e) if known else rundir.write_problem(e, out)
    if error is None:
        rundir.mark(out, "failed", f"{type(e).__name__}: {e}")
        raise e
    if out.is_dir() and not rundir.saved(out):
        shutil.rmtree(out)                    # nothing was written: no empty run directory left
    return _failed(out, error)


def command(main_fn=main) -> int:
    """What `python ttrv.py`, `eval.py` and `grpo_tta.py` run: main_fn on the command line's
    arguments, SIGTERM handled like Ctrl-C; a stop before any run directory exists: one line."""
    with sigterm_interrupts():
        try:
            return main_fn()
        except KeyboardInterrupt as e:
            print(f"{_how(e)}; nothing was saved.", file=sys.stderr)
            return 128 + _signal_number(e)
