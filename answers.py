"""What a response answers, by the question's kind: the answer read from it, the key it votes
with, and its grade against the gold answer. The loop (ttrv.py) and evaluation (eval.py) both
read answers here, so a vote and a grade always see the same answer.

    kind     answer (extract)                            vote key (key)         grade
    choice   option letter (rewards.extract_choice)      the letter             1 if the letter is right
    count    number (rewards.extract_number)             the number             1 - sym. % error
    math     last \\boxed{} (rewards.extract_boxed)      rewards.math_key       rewards.math_equal

The kind is the question's (data.Example.kind, decided where the data is loaded), never the
model's. A response without an answer (None; an empty \\boxed{} counts as none) votes as
rewards.answer_keys says: under the default policy it never wins a vote and gets no majority
reward; its grade is 0.

>>> import data
>>> q = data.Example("m", "What is 3 + 4?", [], "7", None, None)
>>> [extract(t, q) for t in ["so \\\\boxed{7}", "\\\\boxed{}", "it is 7"]]
['7', None, None]
>>> majority([extract(t, q) for t in ["\\\\boxed{7}", "\\\\boxed{8}", "\\\\boxed{7}", "x"]], q)
'7'
"""

from collections import Counter
from typing import Hashable

import data
import rewards


def extract(text: str, example):
    """The answer a response gives to `example` (a letter, a number or a math string), or None."""
    if example.kind == "choice":
        return rewards.extract_choice(text, len(example.options))
    if example.kind == "count":
        return rewards.extract_number(text)
    boxed = rewards.extract_boxed(text)
    return boxed if boxed and boxed.strip() else None   # TTRL (Aug 2025): only boxed answers


def key(answer, example) -> Hashable | None:
    """The vote key of an extracted answer: equivalent math answers share one (rewards.math_key);
    None for no answer."""
    if answer is None:
        return None
    return rewards.math_key(answer) if example.kind == "math" else answer


def vote_keys(texts, example, no_answer: str = "own") -> list[Hashable]:
    """One prompt's N responses -> the keys they vote with (rewards.answer_keys: no answer is a
    NoAnswer key, under "own" never the majority)."""
    return rewards.answer_keys([key(extract(t, example), example) for t in texts], texts,
                               no_answer=no_answer)


def grade(answer, example) -> float:
    """The score of an extracted answer against the gold one: 1/0 (choice, math), 1 - symmetric
    percentage error (count); 0 without an answer."""
    if example.kind == "count":
        return data.count_score(answer, float(example.answer))
    if answer is None:
        return 0.0
    if example.kind == "math":
        return float(rewards.math_equal(example.answer, answer))   # gold first (math-verify)
    return float(answer == example.answer)


def majority(answers, example):
    """The plain majority answer of K samples (maj@K): the answer whose key is the most common,
    ties to the first seen; None when no sample answered. Answers without a key never count."""
    keys = [key(a, example) for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    winner = counts.most_common(1)[0][0]
    return next(a for a, k in zip(answers, keys) if k == winner)   # its first answer, graded
