"""What TTRL's users watch during adaptation, from a side channel the loop never reads: after
each step the harness grades that step's rollouts (ttrv.collect's `seen`, handed to on_step)
against the dataset's labels, and at the end it looks at the run's history for collapse.

    m.update(diagnostics.step(seen, labelled, hp, procs))   # harness/run.py's on_step
    warning = diagnostics.collapse_warning(history)         # None, or one sentence

The definitions (TTRL's trainer logs the first two from its gold labels; DARE measures the third):
- label_accuracy: the share of prompts whose majority answer is right: answers.majority over the
  N responses (the most common answer key, ties to the first seen, no answer never wins), graded
  by answers.grade against the label; right means a full score (1).
- reward_accuracy: the share of responses whose pseudo-reward agrees with the true reward, 1 when
  the response's own answer is right (full score), else 0. For the binary rewards (BINARY:
  majority, random) agreement is equality, as TTRL's. For the others (ttrv, frequency, diversity,
  dare, self-certainty, entropy; ours) a response counts as rewarded when its reward is above
  its group's mean, so the update pushes it up (A > 0 under eq. 2), and agrees when that matches
  the true reward; a group of equal rewards rewards nobody.
- token_overlap (DARE's rollout correlation, our reading): for each prompt, the mean over its
  N(N-1)/2 pairs of responses of the Jaccard index |a & b| / |a | b| of their sets of token ids
  (two empty responses: 1); the mean over prompts. 1: every response uses the same tokens.
Prompts without a label count in token_overlap only; zero-weight stand-ins (torchrun) in none.
"""
import math
from itertools import combinations

import answers

BINARY = ("majority", "random")      # rewards in {0, 1}: compared with the true reward as is


def token_overlap(token_sets) -> float:
    """Mean pairwise Jaccard index of a group's token-id sets (1.0 for fewer than two).

    >>> token_overlap([{1, 2, 3}, {1, 2, 3}, {3, 4}])    # 1, 1/4, 1/4
    0.5
    """
    pairs = list(combinations(token_sets, 2))
    if not pairs:
        return 1.0
    return sum(len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs) / len(pairs)


def rewarded(rewards, reward_name: str) -> list[bool]:
    """Which responses a pseudo-reward rewards: 1 for a binary reward, else above the mean.

    >>> rewarded([1.0, 0.0, 1.0], "majority"), rewarded([0.3, 0.3, -0.2], "ttrv")
    ([True, False, True], [True, True, False])
    >>> rewarded([1.0, 1.0], "majority"), rewarded([0.75, 0.75], "ttrv")
    ([True, True], [False, False])
    """
    if reward_name in BINARY:
        return [r == 1 for r in rewards]
    mean = sum(rewards) / len(rewards)
    return [r > mean + 1e-9 * max(1.0, abs(mean)) for r in rewards]


def grade_group(texts, rewards, gold, reward_name: str, reader: str = "paper"):
    """(label right, share of responses whose pseudo-reward agrees) for one labelled prompt.

    >>> import data
    >>> q = data.Example("q", "Pick one.", ["cat", "dog"], "B", "dog", None)
    >>> grade_group(["B", "B", "A", "B"], [1.0, 1.0, 0.0, 1.0], q, "majority")
    (True, 1.0)
    >>> grade_group(["A", "A", "B"], [1.0, 1.0, 0.0], q, "majority")   # confidently wrong
    (False, 0.0)
    """
    found = [answers.extract(t, gold, reader) for t in texts]
    right = [answers.grade(a, gold) >= 1 for a in found]          # the true reward, 1 or 0
    winner = answers.majority(found, gold)
    agree = sum(p == t for p, t in zip(rewarded(list(rewards), reward_name), right))
    return winner is not None and answers.grade(winner, gold) >= 1, agree / len(texts)


def step(seen, labelled: dict, hp, procs) -> dict:
    """One step's diagnostics over every process's prompts: token_overlap, and with labels
    (`labelled`: example id -> labelled Example) label_accuracy and reward_accuracy."""
    n, ids, mask = hp.rollouts, seen["ids"].cpu(), seen["mask"].cpu().bool()
    sums = dict(token_overlap=[0.0, 0])
    if labelled:
        sums.update(label_accuracy=[0.0, 0], reward_accuracy=[0.0, 0])
    for b, (example, weight) in enumerate(zip(seen["examples"], seen["weights"])):
        if not weight:
            continue
        rows = range(b * n, (b + 1) * n)
        sums["token_overlap"][0] += token_overlap([set(ids[j][mask[j]].tolist()) for j in rows])
        sums["token_overlap"][1] += 1
        gold = labelled.get(example.id)
        if gold is None or gold.answer is None:
            continue
        label, agree = grade_group(seen["texts"][b * n:(b + 1) * n], seen["rewards"][b].tolist(),
                                   gold, hp.reward, hp.answer_reader)
        for key, value in (("label_accuracy", float(label)), ("reward_accuracy", agree)):
            sums[key][0] += value
            sums[key][1] += 1
    return procs.mean({key: tuple(pair) for key, pair in sums.items()})


# ------------------------------------------------------------------------------- collapse

# A run has collapsed when, over the LAST quarter of its steps (WINDOW, at least one step), the
# vote has gone to one answer (majority share >= SHARE_MIN and vote entropy <= ENTROPY_MAX nats;
# 31 of 32 votes agreeing: share 0.97, entropy 0.14), or its responses have shrunk to a few tokens
# (mean length <= SHORT_TOKENS and <= SHRINK times that of the FIRST quarter), while its label
# accuracy has not risen (the last quarter's mean below the first's + RISE). Without labels the
# first two alone decide, and the warning says agreement could not be told from collapse.
WINDOW, SHARE_MIN, ENTROPY_MAX, SHORT_TOKENS, SHRINK, RISE = 0.25, 0.95, 0.2, 5.0, 0.5, 0.05


def _mean(part, key):
    values = [m[key] for m in part if key in m and math.isfinite(m[key])]
    return sum(values) / len(values) if values else None


def collapse_warning(history: list[dict]) -> str | None:
    """One sentence when the run's metrics history (ttrv.adapt's) shows collapse, else None.

    >>> steps = [dict(majority_share=s, answer_entropy=h, response_tokens=12.0, label_accuracy=a)
    ...          for s, h, a in ((.5, 1.2, .5), (.7, .8, .5), (.97, .1, .5), (1.0, 0.0, .25))]
    >>> collapse_warning(steps)[:60]
    'collapse warning: the vote went to one answer (majority shar'
    >>> collapse_warning([dict(m, label_accuracy=.5 + i / 4) for i, m in enumerate(steps)])
    """
    if len(history) < 2:
        return None
    w = max(1, round(len(history) * WINDOW))
    first, last = history[:w], history[-w:]
    label = _mean(first, "label_accuracy"), _mean(last, "label_accuracy")
    if None not in label and label[1] >= label[0] + RISE:
        return None
    problems = []
    share, entropy = _mean(last, "majority_share"), _mean(last, "answer_entropy")
    if share is not None and share >= SHARE_MIN and entropy <= ENTROPY_MAX:
        problems.append(f"the vote went to one answer (majority share {share:.2f}, vote entropy "
                        f"{entropy:.3f} over the last {w} step(s))")
    length, before = _mean(last, "response_tokens"), _mean(first, "response_tokens")
    if length is not None and length <= SHORT_TOKENS and length <= SHRINK * before:
        problems.append(f"responses shrank to {length:.1f} tokens (from {before:.1f})")
    if not problems:
        return None
    why = (f"while label accuracy did not rise ({label[0]:.2f} -> {label[1]:.2f})"
           if None not in label else "(no labels: agreement cannot be told from collapse)")
    return (f"collapse warning: {' and '.join(problems)}, {why}; check the adapted model's "
            "answers before trusting it.")
