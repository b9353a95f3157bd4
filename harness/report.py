"""What people look at after a run: tables in the paper's layout and the Figure 1 trajectory.

    summary = summarize([results_seed0, results_seed1, ...])   # mean and spread over seeds
    print(paper_table({"shapes": summary}))                     # Markdown, like Tables 1/7/11
    plot_trajectory(trajectories, "trajectory.png")             # Figure 1 (needs matplotlib)

Accuracies are printed in percent as in the paper. The spread is the sample standard deviation
over seeds (ddof=1; 0 for a single seed). matplotlib is in requirements.txt; were it missing,
plot_trajectory would return False and everything else would still work.
"""

import math


def mean_std(values) -> tuple[float, float]:
    values = list(values)
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(runs: list[dict]) -> dict:
    """Base / adapted / delta accuracy over seeds: {"base": (mean, std), ..., "seeds": n}.

    >>> summarize([{"base": {"accuracy": .5}, "adapted": {"accuracy": .7}},
    ...            {"base": {"accuracy": .5}, "adapted": {"accuracy": .5}}])["delta"]
    (0.09999999999999998, 0.14142135623730948)
    """
    base = [r["base"]["accuracy"] for r in runs]
    adapted = [r["adapted"]["accuracy"] for r in runs]
    return dict(base=mean_std(base), adapted=mean_std(adapted),
                delta=mean_std(a - b for a, b in zip(adapted, base)), seeds=len(runs))


def _cell(mean_and_std, seeds, sign=False) -> str:
    mean, std = mean_and_std
    text = f"{100 * mean:+.2f}" if sign else f"{100 * mean:.2f}"
    return f"{text} ± {100 * std:.2f}" if seeds > 1 else text


def paper_table(columns: dict[str, dict], method: str = "TTRV") -> str:
    """Markdown table: one column per dataset, rows base / `method` (adapted) / delta (percent).

    >>> print(paper_table({"resisc45": summarize([{"base": {"accuracy": .9008},
    ...                                              "adapted": {"accuracy": .9271}}])}))
    |  | resisc45 |
    |---|---|
    | base | 90.08 |
    | TTRV | 92.71 |
    | delta | +2.63 |
    """
    names = list(columns)
    lines = ["|  | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row, key in (("base", "base"), (method, "adapted"), ("delta", "delta")):
        cells = [_cell(columns[n][key], columns[n]["seeds"], sign=key == "delta") for n in names]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    seeds = {columns[n]["seeds"] for n in names}
    if seeds != {1}:
        lines.append(f"\nmean ± standard deviation over {'/'.join(map(str, sorted(seeds)))} seeds")
    return "\n".join(lines)


def run_table(results: dict) -> str:
    """The terminal table of one run: accuracy, unparseable answers, answer entropy (of the
    vote on the adaptation set, same prompts before and after) and letter-forced accuracy."""
    rows = [("", "accuracy", "unparseable", "answer entropy", "letter-forced")]
    for key in ("base", "adapted"):
        r = results[key]
        entropy, forced = r.get("answer_entropy"), r.get("letter_forced_accuracy")
        rows.append((key, f"{r['accuracy']:.4f}", str(r["unparseable"]),
                     "" if entropy is None else f"{entropy:.3f}",
                     "" if forced is None else f"{forced:.4f}"))
    rows.append(("delta", f"{results['adapted']['accuracy'] - results['base']['accuracy']:+.4f}",
                 "", "", ""))
    return "\n".join(" ".join(c.rjust(w) for c, w in zip(row, (8, 10, 12, 15, 14)))
                     for row in rows)


def lengths_and_levels(predictions: list[dict]) -> dict:
    """The mean response length (greedy, in tokens, the end token included) and, where the
    questions carry a difficulty level (MATH-500's 1-5), accuracy and length per level (TTRL's
    Table 3 layout); avg@K per level too when K samples were drawn.

    >>> lengths_and_levels([dict(correct=1, length=4, level="1"), dict(correct=0, length=8,
    ...                     level="5"), dict(correct=1, length=6, level="5")])["by_level"]["5"]
    {'total': 2, 'accuracy': 0.5, 'response_length': 7.0}
    """
    def stats(ps):
        out = dict(total=len(ps), accuracy=sum(p["correct"] for p in ps) / len(ps),
                   response_length=sum(p["length"] for p in ps) / len(ps))
        if all(p.get("avg_at_k") is not None for p in ps):
            out["avg@K"] = sum(p["avg_at_k"] for p in ps) / len(ps)
        return out
    if not predictions or any("length" not in p for p in predictions):
        return {}
    levels = sorted({p["level"] for p in predictions if p.get("level") is not None},
                    key=lambda v: (len(v), v))                      # "2" before "10"
    by_level = {v: stats([p for p in predictions if p.get("level") == v]) for v in levels}
    return dict(response_length=stats(predictions)["response_length"],
                **({"by_level": by_level} if by_level else {}))


def sampled_table(runs: list[dict]) -> str:
    """Markdown: the sampled figures of base and adapted (avg@K, maj@K, pass@k, the base
    model's maj@N of the votes), mean over seeds; "" when no run has any."""
    keys = [k for k in runs[0]["adapted"] if k.startswith(("avg@", "maj@", "pass@"))]
    votes = [k for k in runs[0]["base"] if k.startswith("votes_maj@")]
    if not keys and not votes:
        return ""
    def cell(key, k):
        if runs[0][key].get(k) is None:
            return ""
        return f"{100 * mean_std(r[key][k] for r in runs)[0]:.2f}"
    head = keys + [k.replace("votes_", "") + " of the votes" for k in votes]
    lines = ["|  | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for key in ("base", "adapted"):
        lines.append(f"| {key} | " + " | ".join(cell(key, k) for k in keys + votes) + " |")
    return "\n".join(lines)


def level_table(runs: list[dict]) -> str:
    """Markdown: greedy accuracy (%) and mean response length (tokens) per difficulty level,
    before and after (TTRL's Table 3), mean over seeds; "" without levels."""
    levels = runs[0]["base"].get("by_level")
    if not levels:
        return ""
    lines = ["| level | questions | base | adapted | base length | adapted length |",
             "|---|---|---|---|---|---|"]
    for v, row in levels.items():
        acc = [mean_std(r[k]["by_level"][v]["accuracy"] for r in runs)[0] for k in ("base",
                                                                                     "adapted")]
        length = [mean_std(r[k]["by_level"][v]["response_length"] for r in runs)[0]
                  for k in ("base", "adapted")]
        lines.append(f"| {v} | {row['total']} | {100 * acc[0]:.2f} | {100 * acc[1]:.2f} | "
                     f"{length[0]:.1f} | {length[1]:.1f} |")
    return "\n".join(lines)


def _band(series: list[list[tuple[float, float]]]):
    """Mean and std at each x over runs that share the same x grid: xs, means, stds."""
    xs = [x for x, _ in series[0]]
    stats = [mean_std(run[i][1] for run in series) for i in range(len(xs))]
    return xs, [m for m, _ in stats], [s for _, s in stats]


def plot_trajectory(trajectories: list[dict], path) -> bool:
    """Figure 1: accuracy and answer entropy against the update step, mean ± std over runs.

    Each trajectory is {"accuracy": [(step, acc), ...], "entropy": [(step, H), ...]}: the
    entropy of each batch's vote (each batch holds other prompts, so the line is noisy). An
    optional "vote_entropy": [(0, H_before), (last step, H_after)], measured on the same
    adaptation prompts before and after, is drawn as squares joined by a dashed line.
    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "accuracy", "accuracy (%)"),
                           (axes[1], "entropy", "answer entropy (nats)")):
        xs, means, stds = _band([t[key] for t in trajectories])
        scale = 100 if key == "accuracy" else 1
        means, stds = [scale * m for m in means], [scale * s for s in stds]
        ax.plot(xs, means, marker="o")
        ax.fill_between(xs, [m - s for m, s in zip(means, stds)],
                        [m + s for m, s in zip(means, stds)], alpha=0.25)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
    if all("vote_entropy" in t for t in trajectories):
        xs, means, _ = _band([t["vote_entropy"] for t in trajectories])
        axes[1].plot(xs, means, "s--", color="C3", label="same prompts, before/after")
        axes[1].lines[0].set(label="each batch's rollouts (other prompts)", alpha=0.5)
        axes[1].legend(fontsize=8)
    fig.suptitle(f"TTRV over adaptation ({len(trajectories)} run(s), mean ± std)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# The per-step terminal line: (metrics key, label, format); the full metrics go to metrics.jsonl.
STEP_LINE = (("reward", "reward", "{:6.3f}"), ("answer_entropy", "H", "{:5.3f}"),
             ("majority_share", "majority", "{:4.2f}"), ("kl", "kl", "{:8.2e}"),
             ("clip_frac", "clip", "{:4.2f}"), ("grad_norm", "|g|", "{:7.3g}"),
             ("lr", "lr", "{:7.1e}"), ("eval_accuracy", "eval acc", "{:6.4f}"),
             ("seconds", "s", "{:5.1f}"))


def step_line(m: dict) -> str:
    """One short aligned line per step, e.g. 'step   3  reward  0.412  H 0.731  majority 0.67 ...'."""
    return f"step {m['step']:3d}" + "".join(f"  {label} {fmt.format(m[key])}"
                                            for key, label, fmt in STEP_LINE if key in m)
