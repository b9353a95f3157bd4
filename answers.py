"""What a response answers, by the question's kind: the answer read from it, the key it votes
with, and its grade against the gold answer. The loop (ttrv.py) and evaluation (eval.py) both
read answers here, so a vote and a grade always see the same answer.

    kind     answer (extract)                 vote key (key)           grade
    choice   option letter (extract_choice)   the letter               1 if the letter is right
    count    number (extract_number)          the number               1 - sym. % error
    math     last \\boxed{} (extract_boxed)   math_answers.math_key    math_answers.math_equal

The kind is the question's (data.Example.kind, decided where the data is loaded), never the
model's. Letters are read by one of two readers (READERS): "paper", ours (extract_choice), or
"official", the official TTRV code's (extract_choice_official; docs/protocols.md has its rules).
A response without an answer (None; an empty \\boxed{} counts as none) votes as answer_keys
says: under the default policy it never wins a vote and gets no majority reward; its grade is 0.

>>> import data
>>> q = data.Example("m", "What is 3 + 4?", [], "7", None, None)
>>> [extract(t, q) for t in ["so \\\\boxed{7}", "\\\\boxed{}", "it is 7"]]
['7', None, None]
>>> majority([extract(t, q) for t in ["\\\\boxed{7}", "\\\\boxed{8}", "\\\\boxed{7}", "x"]], q)
'7'
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Hashable, Sequence

import data
from math_answers import extract_boxed, math_equal, math_key
from rewards import NO_ANSWER_POLICIES, NoAnswer

READERS = ("paper", "official")

# ----------------------------------------------------------------------------- letters: ours

_END_OF_TURN = re.compile(r"<\|[^|>]*\|>|</?s>")  # <|im_end|>, <|endoftext|>, <s>, </s>, ...
_BARE = re.compile(r"\(?\s*([A-Za-z])\s*\)?\s*[.:)]?")  # "b", "B.", "(B)", "b)"
_LEADING_LABEL = re.compile(r"\(?([A-Z])(?:\)|[.:]|\s*$)")  # "B. golf course", "(B) 12"
_ANSWER_PHRASE = re.compile(r"(?i:answer)(?:\s+(?i:is))?\s*[:-]?\s*\(?([A-Z])(?![A-Za-z0-9])")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])")


def extract_choice(text: str, num_options: int = 4) -> str | None:
    """The option letter ("A", "B", ...) a response chose, or None: the "paper" reader (ours).

    Only the first `num_options` letters are answers (4 -> A-D, 6 -> A-F). Rules, first match wins:

    0. clean: drop end-of-turn tokens ("<|im_end|>", "</s>"), markdown "*" and "`", outer spaces;
    1. the whole response is one letter, in either case, maybe with "(", ")", "." or ":"
       ("b", "b.", "(B)") -> that letter;
    2. it starts with an upper-case option label: "B. golf course", "(B) 12", "B) golf" -> B;
    3. "answer is X" / "Answer: X" with X upper case: the last such phrase;
    4. the last standalone upper-case letter (not touching other letters or digits), as the
       official code does ("I pick C" -> C).

    A letter outside the first num_options never counts; the search goes on to the next rule.
    Departures from the official reader (extract_choice_official), each a row of the README's
    table: lower-case letters inside a sentence are ignored (the article in "a golf course" is
    not option A; a capital "A golf course." still reads A), and rules 2-3 win over later letters.

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


# ----------------------------------------------------------------------------- letters: official

_OFFICIAL_LETTER = re.compile(r"(?<!\w)[ABCD](?!\w)")   # \w as Python's re: letters, digits, _


def _official_trim(text: str) -> str:
    """The official code's first trim: newlines off both ends, then trailing "." and "/" runs,
    spaces off both ends, leading ":" runs."""
    return text.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")


def extract_choice_official(text: str, num_options: int = 4) -> str | None:
    """The option letter as the official TTRV code reads it (choice_answer_clean_gpqa), or None:
    the last A, B, C or D standing alone (no letter, digit or "_" beside it) in the upper-cased
    text. num_options is ignored: the official reader always reads A-D, whatever the options.

    >>> [extract_choice_official(t) for t in ["a golf course", "The answer is B, not D.", "(c)"]]
    ['A', 'D', 'C']
    >>> [extract_choice_official(t) for t in ["E", "B_2", "Bé", "none"]]
    [None, None, None, None]
    """
    letters = _OFFICIAL_LETTER.findall(_official_trim(text).upper())
    return letters[-1] if letters else None


def official_no_answer_text(text: str) -> str:
    """What the official code keys a response without a letter on: the trimmed text, outer
    whitespace and "." off both ends, then trailing "." and "/" runs off again.

    >>> [official_no_answer_text(t) for t in [" golf course.\\n", ": golf/ ", "...x./."]]
    ['golf course', 'golf', 'x']
    """
    return _official_trim(text).strip().strip(".").rstrip(".").rstrip("/")


# ----------------------------------------------------------------------------- numbers

_NUMBER = re.compile(r"(?<![A-Za-z0-9.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def _last_box(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces inside it balanced (unclosed: the rest); None if
    there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return text[i:]


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
    boxed = _last_box(text)
    numbers = _NUMBER.findall(text if boxed is None else boxed)
    return float(numbers[-1].replace(",", "")) if numbers else None


# ----------------------------------------------------------------------------- answers -> keys

def answer_keys(answers: Sequence[str | float | None], texts: Sequence[str] | None = None,
                no_answer: str = "own", reader: str = "paper") -> list[Hashable]:
    """Hashable keys for the vote: the answer itself, or a rewards.NoAnswer key when it is None.

    no_answer decides how unanswered responses are counted:
      "own"  (default) each is an answer of its own: vote share 1/N, never the majority;
      "pool" all share one key, so many unanswered responses can outvote a real answer;
      "text" the official code: each one's text is its answer (identical texts pool), stripped
             (reader "paper") or trimmed as the official code does (official_no_answer_text).

    >>> answer_keys(["A", None, None], no_answer="own")
    ['A', NoAnswer(tag=1), NoAnswer(tag=2)]
    >>> answer_keys(["A", None, None], no_answer="pool")
    ['A', NoAnswer(tag=None), NoAnswer(tag=None)]
    >>> answer_keys(["A", None, None], texts=["A", " cat", "cat. "], no_answer="text")
    ['A', NoAnswer(tag='cat'), NoAnswer(tag='cat.')]
    >>> answer_keys(["A", None, None], ["A", " cat", "cat. "], "text", reader="official")[2]
    NoAnswer(tag='cat')
    """
    if no_answer not in NO_ANSWER_POLICIES:
        raise ValueError(f"no_answer must be one of {NO_ANSWER_POLICIES}, got {no_answer!r}.")
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}.")
    if no_answer == "text" and (texts is None or len(texts) != len(answers)):
        raise ValueError('no_answer="text" needs texts, one per answer.')
    trim = official_no_answer_text if reader == "official" else str.strip

    def no_answer_key(i: int) -> NoAnswer:
        if no_answer == "own":
            return NoAnswer(i)
        return NoAnswer(None) if no_answer == "pool" else NoAnswer(trim(texts[i]))

    return [no_answer_key(i) if a is None else a for i, a in enumerate(answers)]


# ----------------------------------------------------------------------------- by the question

def extract(text: str, example, reader: str = "paper"):
    """The answer a response gives to `example` (a letter, a number or a math string), or None.
    `reader` picks the letter reader (READERS); numbers and math answers have one reader."""
    if example.kind == "choice":
        read = extract_choice_official if reader == "official" else extract_choice
        return read(text, len(example.options))
    if example.kind == "count":
        return extract_number(text)
    return extract_boxed(text)   # TTRL (Aug 2025): only boxed answers; an empty box is none


def key(answer, example) -> Hashable | None:
    """The vote key of an extracted answer: equivalent math answers share one (math_key);
    None for no answer."""
    if answer is None:
        return None
    return math_key(answer) if example.kind == "math" else answer


def vote_keys(texts, example, no_answer: str = "own", reader: str = "paper") -> list[Hashable]:
    """One prompt's N responses -> the keys they vote with (answer_keys: no answer is a
    NoAnswer key, under "own" never the majority); `reader` as in extract."""
    return answer_keys([key(extract(t, example, reader), example) for t in texts], texts,
                       no_answer=no_answer, reader=reader)


def same_answer(gold, answer, example) -> bool:
    """Whether `answer` grades equal to `gold` taken as the gold answer: math_equal (gold first)
    for math, equality for letters and numbers; never without an answer."""
    if gold is None or answer is None:
        return False
    return math_equal(gold, answer) if example.kind == "math" else gold == answer


def grade_match(texts, example, reader: str = "paper") -> Callable[[int, int], bool]:
    """TTRL's official reward rule for rewards.majority_reward(match="grade"): same(w, j) says
    whether response j's answer grades equal to that of response w (the winner's first)."""
    found = [extract(t, example, reader) for t in texts]
    return lambda w, j: same_answer(found[w], found[j], example)


def grade(answer, example) -> float:
    """The score of an extracted answer against the gold one: 1/0 (choice, math), 1 - symmetric
    percentage error (count); 0 without an answer."""
    if example.kind == "count":
        return data.count_score(answer, float(example.answer))
    return float(same_answer(example.answer, answer, example))


def majority(answers, example):
    """The plain majority answer of K samples (maj@K): the answer whose key is the most common,
    ties to the first seen; None when no sample answered. Answers without a key never count."""
    keys = [key(a, example) for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    winner = counts.most_common(1)[0][0]
    return next(a for a, k in zip(answers, keys) if k == winner)   # its first answer, graded
