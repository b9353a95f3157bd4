"""Rewards for TTRV: equations (3)-(7) of the paper, and the rewards it is compared with.

TTRV samples N responses to one unlabeled test input, reads the answer out of each, and rewards
a response by how often its answer was given (eq. 4) minus alpha times the entropy of the answers
(eqs. 5-7). This file turns vote keys into those numbers; nothing here knows about models or
about reading answers (answers.py reads them and makes the keys).

    text --answers.extract--> answer --answers.vote_keys--> key --rewards--> float

What it leaves out: the GRPO advantage of eq. (2) (grpo.py), sampling (ttrv.py), and computing
token entropies for DARE (the caller passes them in). Plain Python + NumPy, no torch.

A reading note worth knowing before using `diversity`: r2 = -H is one number per test input,
the same for all N responses, so a per-group mean baseline (eq. 2) cancels alpha*r2 exactly; it
only acts with a baseline over several inputs or with no baseline at all (eq. 9).

Worked example of the paper, answers [A, A, A, B]:
>>> keys = ["A", "A", "A", "B"]
>>> empirical_distribution(keys)
{'A': 0.75, 'B': 0.25}
>>> frequency_reward(keys).tolist()
[0.75, 0.75, 0.75, 0.25]
>>> round(entropy(empirical_distribution(keys)), 6)
0.562335
>>> np.round(ttrv_reward(keys, alpha=0.75), 6).tolist()
[0.328249, 0.328249, 0.328249, -0.171751]
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

# ----------------------------------------------------------------------------- answers -> keys

@dataclass(frozen=True)
class NoAnswer:
    """Key of a response with no extractable answer; never equal to a real answer.

    tag is None under "pool", the response index under "own", the response's text under "text"
    (answers.answer_keys makes these keys).
    """

    tag: object = None


NO_ANSWER_POLICIES = ("own", "pool", "text")   # answers.answer_keys says what each does


# ----------------------------------------------------------------------------- eqs. (3)-(7)

def _check(keys: Sequence[Hashable]) -> None:
    if len(keys) == 0:
        raise ValueError("need at least one response (keys is empty).")


def empirical_distribution(keys: Sequence[Hashable]) -> dict:
    """Eq. (3): p(u_m) = (1/N) sum_j 1{y_j = u_m}, in order of first appearance.

    >>> empirical_distribution(["A", "A", "A", "B"])
    {'A': 0.75, 'B': 0.25}
    """
    _check(keys)
    return {key: count / len(keys) for key, count in Counter(keys).items()}


def frequency_reward(keys: Sequence[Hashable]) -> np.ndarray:
    """Eq. (4): r1(y_j) = p(answer of y_j), the vote share of the response's own answer.

    >>> frequency_reward(["A", "A", "A", "B"]).tolist()
    [0.75, 0.75, 0.75, 0.25]
    """
    p = empirical_distribution(keys)
    return np.array([p[key] for key in keys], dtype=np.float64)


def entropy(dist: dict, normalized: bool = False) -> float:
    """Eq. (5): H(P) = -sum_m p(u_m) log p(u_m), natural log.

    normalized=True divides by log M (M distinct answers), as the official code does, giving a
    value in [0, 1]; it is 0 when M = 1.

    >>> round(entropy({"A": 0.75, "B": 0.25}), 6), round(entropy({"A": 0.75, "B": 0.25}, True), 6)
    (0.562335, 0.811278)
    """
    probs = [p for p in dist.values() if p > 0]
    h = -sum(p * math.log(p) for p in probs)
    if normalized:
        return h / math.log(len(probs)) if len(probs) > 1 else 0.0
    return h


def diversity_reward(keys: Sequence[Hashable], normalized: bool = False) -> float:
    """Eq. (6): r2 = -H(P). One number for the whole group of N responses.

    >>> round(diversity_reward(["A", "A", "A", "B"]), 6)
    -0.562335
    """
    return -entropy(empirical_distribution(keys), normalized)


def ttrv_reward(keys: Sequence[Hashable], alpha: float = 0.75,
                normalized: bool = False) -> np.ndarray:
    """Eq. (7): R(y_j) = r1(y_j) + alpha * r2, alpha = 0.75 in the paper.

    >>> np.round(ttrv_reward(["A", "A", "A", "B"]), 6).tolist()
    [0.328249, 0.328249, 0.328249, -0.171751]
    """
    return frequency_reward(keys) + alpha * diversity_reward(keys, normalized)


# ----------------------------------------------------------------------------- related rewards

def majority_reward(keys: Sequence[Hashable], match: str = "key",
                    same: Callable[[int, int], bool] | None = None) -> np.ndarray:
    """TTRL (Zuo et al. 2025): 1 for responses whose answer is the most common one, else 0.

    Ties go to the tied answer seen first (as Counter.most_common). An "own" NoAnswer key (a
    single unanswered response) is never the majority; if every key is one, all rewards are 0.
    match="key" rewards the responses whose key is the winner's; match="grade" is TTRL's official
    rule: response j is also rewarded when same(w, j), its answer grading equal to that of w, the
    winner's first response (answers.grade_match); a NoAnswer response never is.

    >>> majority_reward(["B", "A", "A", "B", "C"]).tolist()
    [1.0, 0.0, 0.0, 1.0, 0.0]
    >>> majority_reward(["B", "A", "B"], "grade", same=lambda w, j: j == 1).tolist()
    [1.0, 1.0, 1.0]
    """
    _check(keys)
    if match not in ("key", "grade") or (match == "grade" and same is None):
        raise ValueError(f'match must be "key", or "grade" with same(w, j); got {match!r}.')
    own = [isinstance(k, NoAnswer) and isinstance(k.tag, int) for k in keys]  # "own" no-answers
    counts = Counter(k for k, is_own in zip(keys, own) if not is_own)
    if not counts:
        return np.zeros(len(keys))
    winner = counts.most_common(1)[0][0]
    w = keys.index(winner)
    return np.array([float(key == winner or (match == "grade" and not isinstance(key, NoAnswer)
                                             and same(w, j))) for j, key in enumerate(keys)])


def random_reward(keys: Sequence[Hashable], rng: np.random.Generator) -> np.ndarray:
    """Table 5 (after "Spurious Rewards"): each response 1 with probability 0.5, else 0.

    Only len(keys) is used; the answers themselves are ignored. Seeded through rng.

    >>> random_reward(["A", "B", "C"], np.random.default_rng(0)).tolist()
    [0.0, 1.0, 1.0]
    """
    return (rng.random(len(keys)) < 0.5).astype(np.float64)


def dare_reward(keys: Sequence[Hashable], token_entropies: Sequence[float], alpha: float = 0.5,
                tau: float = 0.05, eps: float = 1e-6) -> np.ndarray:
    """DARE (Du, Huang, Li): votes weighted by confidence, plus a bonus for rare confident answers.

    For each distinct answer y among the M rollouts (notes, section 6):
      n(y) = number of rollouts with answer y,
      u(y) = mean over those rollouts of their mean token entropy (token_entropies[j]),
      p(y) = n(y) / (u(y) + eps), normalised to sum to 1,
      b(y) = (1 - n(y)/M) * (1 - u(y)),        reward(y) = p(y) + alpha * b(y).
    Pruning (one pass): answers with p(y) < tau are dropped (the most probable answer is always
    kept), then n, M, u, p, b are recomputed over the surviving rollouts; pruned rollouts get 0.

    The paper publishes no constants: alpha=0.5, tau=0.05, eps=1e-6 are our choices. b needs u in
    [0, 1] (then b >= 0, larger for rarer answers), and the paper states no scale: ours, the loop
    passes token entropies divided by ln V, V the vocabulary size (rollout.Rollouts). A u
    above 1 (raw nats) would make b a penalty for rare answers; we do not clip.

    >>> np.round(dare_reward(["A", "A", "A", "B"], [0.2, 0.4, 0.3, 0.8], eps=0.0), 6).tolist()
    [0.976389, 0.976389, 0.976389, 0.186111]
    """
    _check(keys)
    if len(token_entropies) != len(keys):
        raise ValueError(f"got {len(token_entropies)} token_entropies for {len(keys)} keys.")
    u_rollout = np.asarray(token_entropies, dtype=np.float64)

    def score(alive: np.ndarray) -> dict:
        groups = {}
        for j in np.flatnonzero(alive):
            groups.setdefault(keys[j], []).append(j)
        m = int(alive.sum())
        n = {y: len(js) for y, js in groups.items()}
        u = {y: float(u_rollout[js].mean()) for y, js in groups.items()}
        w = {y: n[y] / (u[y] + eps) for y in groups}
        p = {y: w[y] / sum(w.values()) for y in groups}
        return {y: (p[y], p[y] + alpha * (1 - n[y] / m) * (1 - u[y])) for y in groups}

    first = score(np.ones(len(keys), dtype=bool))
    p_max = max(p for p, _ in first.values())
    kept = {y for y, (p, _) in first.items() if p >= tau or p == p_max}
    alive = np.array([key in kept for key in keys])
    final = score(alive)
    return np.array([final[key][1] if ok else 0.0 for key, ok in zip(keys, alive)])


# ----------------------------------------------------------------------------- one entry point

REWARDS: dict[str, Callable[..., np.ndarray]] = {
    # each takes (keys, **options of compute_rewards) and ignores the options it does not need
    "ttrv": lambda keys, *, alpha, normalized_entropy, **_: ttrv_reward(
        keys, alpha, normalized_entropy),
    "frequency": lambda keys, **_: frequency_reward(keys),  # Table 3, "without diversity reward"
    "diversity": lambda keys, *, alpha, normalized_entropy, **_: np.full(  # "without frequency"
        len(keys), alpha * diversity_reward(keys, normalized_entropy)),
    "majority": lambda keys, *, match, same, **_: majority_reward(  # TTRL; Table 3 "majority"
        keys, match, same),
    "random": lambda keys, *, rng, **_: random_reward(keys, rng),  # Table 5
    "dare": lambda keys, *, token_entropies, dare_alpha, dare_tau, dare_eps, **_: dare_reward(
        keys, token_entropies, dare_alpha, dare_tau, dare_eps),
}


# the per-token statistic of pi_T each reward reads: the sampler records it (rollout.TOKEN_STATS)
TOKEN_STAT = {"dare": "entropy"}


def compute_rewards(name: str, keys: Sequence[Hashable], *, alpha: float = 0.75,
                    normalized_entropy: bool = False,
                    token_entropies: Sequence[float] | None = None,
                    rng: np.random.Generator | None = None, dare_alpha: float = 0.5,
                    dare_tau: float = 0.05, dare_eps: float = 1e-6, match: str = "key",
                    same: Callable[[int, int], bool] | None = None) -> np.ndarray:
    """Rewards (float64, shape [N]) of the N responses of one input under the reward `name`.

    "diversity" is alpha * r2 given to every response; "frequency" is r1 alone (alpha = 0);
    match and same are majority_reward's (TTRL's rule: match="grade", same=answers.grade_match).

    >>> compute_rewards("majority", ["A", "A", "B"]).tolist()
    [1.0, 1.0, 0.0]
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known rewards are: {', '.join(REWARDS)}.")
    if name == "dare" and token_entropies is None:
        raise ValueError('reward "dare" needs token_entropies, one mean entropy per response.')
    if name == "random" and rng is None:
        raise ValueError('reward "random" needs rng (a seeded numpy.random.Generator).')
    rewards = REWARDS[name](keys, alpha=alpha, normalized_entropy=normalized_entropy,
                            token_entropies=token_entropies, rng=rng, dare_alpha=dare_alpha,
                            dare_tau=dare_tau, dare_eps=dare_eps, match=match, same=same)
    return np.asarray(rewards, dtype=np.float64)
