"""grpo_tta.py's command line and run: checked settings, a fresh run directory, the data and the
CLIP, all four methods of grpo_tta.py over the test set, one table.

    python grpo_tta.py [flags]     # -> command(): grpo_tta_config checks the flags before torch

Every ending says what happened in status.json; an error is one sentence on stderr (cli.ended).
"""
import json
import sys
import time
from pathlib import Path

from harness.grpo_tta_config import TINY_CLIP, fit_group, needs_hub, parse_args


def run(cfg, out: Path, log=print) -> dict:
    """All four methods over the test set; predictions.jsonl written as it goes, then results."""
    from tqdm import tqdm

    from grpo_tta import (METHODS, Episode, ViewMaker, adapt_image, chosen_parameters,
                          text_embeddings)
    from harness import clip_data, clip_models
    if cfg.model != TINY_CLIP:
        clip_models.check_clip(cfg.model)          # before the data and any weights
    ds = clip_data.load(cfg.dataset, cfg.data_dir, cfg.classnames, cfg.limit, cfg.seed)
    cfg = fit_group(cfg, len(ds.classnames), log)   # fewer classes than K: all of them
    if cfg.model == TINY_CLIP:
        from harness import tiny_clip
        name = str(tiny_clip.tiny_clip_path(log=log))
    else:
        name = cfg.model
    model, processor = clip_models.load_clip(name, cfg.device)
    (out / "config.json").write_text(json.dumps(dict(vars(cfg), resolved_model=name), indent=2))
    text = text_embeddings(model, processor, ds.classnames, cfg.device)            # [C, D]
    episode = Episode(chosen_parameters(model, cfg.params), cfg.lr, cfg.weight_decay)
    make_views = ViewMaker(processor, cfg.views)
    states = None if cfg.reset else {"TPT": episode.start, "GRPO-TTA": episode.start}
    correct, seconds, grpo_stats = dict.fromkeys(METHODS, 0), [], []
    with open(out / "predictions.jsonl", "w") as f:
        for i, (ex, label) in enumerate(tqdm(list(zip(ds.examples, ds.labels)), desc="images",
                                             disable=cfg.quiet)):
            t0 = time.perf_counter()
            views = make_views(ex.image(), seed=cfg.seed * 1_000_003 + i).to(cfg.device)
            pred, info = adapt_image(model, episode, views, text, cfg, cfg.seed * 1_000_003 + i,
                                     states)
            seconds.append(time.perf_counter() - t0)
            grpo_stats.append(info["GRPO-TTA"])
            for m in METHODS:
                correct[m] += pred[m] == label
            f.write(json.dumps({"id": ex.id, "label": ds.classnames[label],
                                **{m: ds.classnames[p] for m, p in pred.items()}}) + "\n")
            f.flush()
    n = len(ds.examples)
    results = {m: dict(accuracy=correct[m] / n, correct=correct[m], total=n) for m in METHODS}
    mean = lambda key: sum(s[key] for s in grpo_stats) / n
    results["GRPO-TTA"].update(mean_reward=mean("reward"), mean_kl=mean("kl"),
                               mean_last_ratio=mean("last_ratio"), mean_clip_frac=mean("clip_frac"))
    results["seconds_per_image"] = sum(seconds) / n       # views + all four methods
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def table(results: dict) -> str:
    """The terminal table: one row per method, accuracy in percent and correct / total."""
    from grpo_tta import METHODS
    rows = [f"{'method':<10} {'accuracy':>9} {'correct':>13}"]
    rows += [f"{m:<10} {100 * results[m]['accuracy']:>8.2f}% "
             f"{results[m]['correct']:>6} / {results[m]['total']:<6}" for m in METHODS]
    return "\n".join(rows)


def main(argv=None) -> int:
    """The command line: checked settings, a fresh run directory, the four methods, one table.
    Every ending says what happened in status.json; an error is one sentence on stderr."""
    cfg = parse_args(argv)                 # before torch: --help and bad settings
    import torch

    from harness import cli, models, rundir
    if cfg.device == "auto":
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    models.quiet_transformers()
    log = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, file=sys.stderr))
    if needs_hub(cfg):              # a hub id or hub dataset: fail at once when offline
        models.work_offline_if_hub_unreachable(log)
    try:
        out = rundir.run_dir(cfg, log)
    except rundir.RunDirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        results = run(cfg, out, log)
        (out / "results.md").write_text(table(results) + "\n")
        rundir.mark(out, "complete")
    except BaseException as e:     # one line and status.json: failed, interrupted, or a bug
        return cli.ended(out, e)
    print(table(results))
    print(f"written to {out}")
    return 0


def command(argv=None) -> int:
    """What `python grpo_tta.py` runs: `main`, SIGTERM ending the run as Ctrl-C does."""
    from harness import cli
    return cli.command(lambda: main(argv))
