"""Rewards for TTRV: equations (3)-(7) of the paper, and the rewards it is compared with.

TTRV samples N responses to one unlabeled test input, reads the answer out of each, and rewards
a response by how often its answer was given (eq. 4) minus alpha times the entropy of the answers
(eqs. 5-7). This file turns answers into those numbers; nothing here knows about models.

    text --extract_choice/extract_number--> answer --answer_keys--> key --rewards--> float

What it leaves out: the GRPO advantage of eq. (2) (grpo.py), sampling (ttrv.py), and computing
token entropies for DARE (the caller passes them in). Plain Python + NumPy, no torch.

A reading note worth knowing before using `diversity`: r2 = -H is one number per test input,
the same for all N responses, so a per-group mean baseline (eq. 2) cancels alpha*r2 exactly; it
only acts with a baseline over several inputs or with no baseline at all (eq. 9).

Worked example of the paper, answers [A, A, A, B]:
>>> keys = answer_keys(["A", "A", "A", "B"])
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
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

# ----------------------------------------------------------------------------- answer extraction

_END_OF_TURN = re.compile(r"<\|[^|>]*\|>|</?s>")  # <|im_end|>, <|endoftext|>, <s>, </s>, ...
_BARE = re.compile(r"\(?\s*([A-Za-z])\s*\)?\s*[.:)]?")  # "b", "B.", "(B)", "b)"
_LEADING_LABEL = re.compile(r"\(?([A-Z])(?:\)|[.:]|\s*$)")  # "B. golf course", "(B) 12"
_ANSWER_PHRASE = re.compile(r"(?i:answer)(?:\s+(?i:is))?\s*[:-]?\s*\(?([A-Z])(?![A-Za-z0-9])")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])")


def extract_choice(text: str, num_options: int = 4) -> str | None:
    """The option letter ("A", "B", ...) a response chose, or None.

    Only the first `num_options` letters are answers (4 -> A-D, 6 -> A-F). Rules, first match wins:

    0. clean: drop end-of-turn tokens ("<|im_end|>", "</s>"), markdown "*" and "`", outer spaces;
    1. the whole response is one letter, in either case, maybe with "(", ")", "." or ":"
       ("b", "b.", "(B)") -> that letter;
    2. it starts with an upper-case option label: "B. golf course", "(B) 12", "B) golf" -> B;
    3. "answer is X" / "Answer: X" with X upper case: the last such phrase;
    4. the last standalone upper-case letter (not touching other letters or digits), as the
       official code does ("I pick C" -> C).

    A letter outside the first num_options never counts; the search goes on to the next rule.

    Departure from the official code, which upper-cases the text first: lower-case letters inside
    a sentence are ignored, so the article in "a golf course" is not option A. A capital "A" used
    as an article ("A golf course.") is still read as A, as in the official code.

    >>> [extract_choice(t) for t in ["B", "(b)", "Answer: C", "B. golf course", "**D**<|im_end|>"]]
    ['B', 'B', 'C', 'B', 'D']
    >>> [extract_choice(t, n) for t, n in [("It shows a golf course.", 4), ("E", 4), ("E", 6)]]
    [None, None, 'E']
    """
    if not 1 <= num_options <= 26:
        raise ValueError(f"num_options must be between 1 and 26, got {num_options}.")
    valid = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:num_options]
    text = _END_OF_TURN.sub("", text).replace("*", "").replace("`", "").strip()
    bare = _BARE.fullmatch(text)
    if bare and bare.group(1).upper() in valid:
        return bare.group(1).upper()
    leading = _LEADING_LABEL.match(text)
    if leading and leading.group(1) in valid:
        return leading.group(1)
    for pattern in (_ANSWER_PHRASE, _STANDALONE):
        letters = [m.group(1) for m in pattern.finditer(text) if m.group(1) in valid]
        if letters:
            return letters[-1]
    return None


_BOXED = "\\boxed{"
_NUMBER = re.compile(r"(?<![A-Za-z0-9.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces inside it balanced; None if there is none."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return text[i:]  # unclosed: take the rest


def extract_number(text: str) -> float | None:
    """A free-form (counting) answer: the last number in the last \\boxed{...}, else in the text.

    Numbers may carry a minus sign, a decimal part, and thousands commas ("1,234" -> 1234.0).
    A number glued to letters ("H2O") is not read. If a \\boxed{} is present but holds no number
    the answer is None: the model committed to something that is not a count.

    >>> extract_number("There are \\\\boxed{1,234} birds"), extract_number("12.5 or -3")
    (1234.0, -3.0)
    >>> extract_number("no idea") is None
    True
    """
    boxed = _last_boxed(text)
    numbers = _NUMBER.findall(text if boxed is None else boxed)
    return float(numbers[-1].replace(",", "")) if numbers else None


# ------------------------------------------------ math answers: STAND-INS until issue-18b merges
# issue-18b writes extract_boxed, math_key and math_equal (math-verify, its tests); when merging,
# keep its versions and delete this block. These are only what tiny-math's integers need.

def extract_boxed(text: str) -> str | None:
    """Stand-in: the content of the last \\boxed{...} (brace-matched), or None."""
    return _last_boxed(text)


def math_key(answer: str | None) -> Hashable | None:
    """Stand-in: the answer without spaces (a number as its float); None for an empty answer."""
    if answer is None or not answer.strip():
        return None
    text = answer.replace(" ", "")
    try:
        return float(text)
    except ValueError:
        return text


def math_equal(gold: str, answer: str) -> bool:
    """Stand-in: equal math_key."""
    return math_key(gold) is not None and math_key(gold) == math_key(answer)


# ----------------------------------------------------------------------------- answers -> keys

@dataclass(frozen=True)
class NoAnswer:
    """Key of a response with no extractable answer; never equal to a real answer.

    tag is None under "pool", the response index under "own", the stripped text under "text".
    """

    tag: object = None


NO_ANSWER_POLICIES = ("own", "pool", "text")


def answer_keys(answers: Sequence[str | float | None], texts: Sequence[str] | None = None,
                no_answer: str = "own") -> list[Hashable]:
    """Hashable keys for the vote: the answer itself, or a NoAnswer key when it is None.

    no_answer decides how unanswered responses are counted:
      "own"  (default) each is an answer of its own: vote share 1/N, never the majority;
      "pool" all share one key, so many unanswered responses can outvote a real answer;
      "text" the official code: each one's stripped text is its answer (identical texts pool).

    >>> answer_keys(["A", None, None], no_answer="own")
    ['A', NoAnswer(tag=1), NoAnswer(tag=2)]
    >>> answer_keys(["A", None, None], no_answer="pool")
    ['A', NoAnswer(tag=None), NoAnswer(tag=None)]
    >>> answer_keys(["A", None, None], texts=["A", " cat", "cat "], no_answer="text")
    ['A', NoAnswer(tag='cat'), NoAnswer(tag='cat')]
    """
    if no_answer not in NO_ANSWER_POLICIES:
        raise ValueError(f"no_answer must be one of {NO_ANSWER_POLICIES}, got {no_answer!r}.")
    if no_answer == "text" and (texts is None or len(texts) != len(answers)):
        raise ValueError('no_answer="text" needs texts, one per answer.')

    def no_answer_key(i: int) -> NoAnswer:
        if no_answer == "own":
            return NoAnswer(i)
        return NoAnswer(None) if no_answer == "pool" else NoAnswer(texts[i].strip())

    return [no_answer_key(i) if a is None else a for i, a in enumerate(answers)]


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

def majority_reward(keys: Sequence[Hashable]) -> np.ndarray:
    """TTRL (Zuo et al. 2025): 1 for responses whose answer is the most common one, else 0.

    Ties go to the tied answer seen first (as Counter.most_common). An "own" NoAnswer key (a
    single unanswered response) is never the majority; if every key is one, all rewards are 0.

    >>> majority_reward(["B", "A", "A", "B", "C"]).tolist()
    [1.0, 0.0, 0.0, 1.0, 0.0]
    """
    _check(keys)
    own = [isinstance(k, NoAnswer) and isinstance(k.tag, int) for k in keys]  # "own" no-answers
    counts = Counter(k for k, is_own in zip(keys, own) if not is_own)
    if not counts:
        return np.zeros(len(keys))
    winner = counts.most_common(1)[0][0]
    return np.array([float(key == winner) for key in keys])


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

    The paper publishes no constants: alpha=0.5, tau=0.05, eps=1e-6 are our choices. b assumes
    u in [0, 1] (e.g. entropy / log(vocabulary size)); larger u makes it negative, we do not clip.

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
    "majority": lambda keys, **_: majority_reward(keys),  # TTRL, Table 3 "majority vote"
    "random": lambda keys, *, rng, **_: random_reward(keys, rng),  # Table 5
    "dare": lambda keys, *, token_entropies, dare_alpha, dare_tau, dare_eps, **_: dare_reward(
        keys, token_entropies, dare_alpha, dare_tau, dare_eps),
}


def compute_rewards(name: str, keys: Sequence[Hashable], *, alpha: float = 0.75,
                    normalized_entropy: bool = False,
                    token_entropies: Sequence[float] | None = None,
                    rng: np.random.Generator | None = None, dare_alpha: float = 0.5,
                    dare_tau: float = 0.05, dare_eps: float = 1e-6) -> np.ndarray:
    """Rewards (float64, shape [N]) of the N responses of one input under the reward `name`.

    "diversity" is alpha * r2 given to every response; "frequency" is r1 alone (alpha = 0).

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
                            dare_tau=dare_tau, dare_eps=dare_eps)
    return np.asarray(rewards, dtype=np.float64)
