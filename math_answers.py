"""Math answers for TTRL and DARE on text LLMs: the boxed answer, its equivalence, its vote key.

    response --extract_boxed--> answer --math_key--> vote key (rewards.answer_keys, majority)
    answer, gold --math_equal--> correct?             (accuracy, avg@K, maj@K)

We follow TTRL's **August 2025** code (26413fa), not the May 2025 code of the paper's numbers
(methods-notes section 1): only a boxed answer counts (no box: no vote, reward 0) and the vote
key is a sympy-simplified expression. Why: the May code falls back to "the answer is ..." and to
the last number of the text, so a response that never answered can vote, and there an empty
answer can win the vote and be rewarded ("" equals ""); boxed-only answers have neither defect
and are what the prompt asks for ("put your final answer within \\boxed{}"). Departure from the
August code: a response is rewarded when its key equals the winning key (rewards.majority_reward),
not by a mathd / sympy / math-verify chain against the winner; equivalent answers share a key, so
the key does that work once per answer.

Grading is Hugging Face's math-verify (`parse`, then `verify(gold, prediction)`, gold first),
imported on first use (it loads sympy). It only reads bare LaTeX inside $...$, \\[...\\] or
\\boxed{}, so an answer is wrapped in \\boxed{} before parsing. Its timeouts use signal.alarm,
which only works in the main thread: there they stay on (math-verify's 5 s), in any other thread
they are off, and `_tame` refuses beforehand the expressions whose evaluation can run for minutes
(towers like 2^{2^{100}}, 9!!!), which are then compared as text.

>>> extract_boxed("so \\\\boxed{\\\\frac{1}{2}}, no: \\\\boxed{\\\\frac{1}{3}}")
'\\\\frac{1}{3}'
>>> math_equal("0.5", "\\\\frac{1}{2}"), math_key("1/2") == math_key("0.5")
(True, True)
"""
from __future__ import annotations

import functools
import re
import threading
from decimal import Decimal, localcontext
from typing import Hashable

# ----------------------------------------------------------------------------- extraction

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str | None) -> str | None:
    """Content of the LAST \\boxed{...} (or \\boxed {...}, \\fbox{...}), braces matched; or None.

    Nested braces are matched ("\\boxed{\\frac{1}{2}}" -> "\\frac{1}{2}"); escaped braces \\{ \\}
    are text, not structure ("\\boxed{\\{1,2\\}}" -> "\\{1,2\\}"). An empty box, a box that is
    never closed (a response cut off at the token limit) and a text without a box give None.
    Our choice: "\\boxed 5" without braces is not read (Qwen's prompt asks for braces).

    >>> [extract_boxed(t) for t in ["\\\\boxed{1} then \\\\boxed{2}", "\\\\boxed{ }", "\\\\boxed{3", "42"]]
    ['2', None, None, None]
    """
    starts = list(_BOX.finditer(text or ""))
    if not starts:
        return None
    i = starts[-1].end()
    depth, j = 1, i
    while j < len(text):
        if text[j] == "\\":                       # \{ \} \\ : skip the escaped character
            j += 2
            continue
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip() or None
        j += 1
    return None                                   # unclosed


# ----------------------------------------------------------------------------- math-verify

_LIMIT = 1000  # largest exponent / factorial argument _tame lets sympy evaluate (our choice)


def _timeout() -> int | None:
    """math-verify's timeout in seconds: its default in the main thread, off elsewhere
    (signal.alarm raises outside the main thread)."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse(answer: str) -> list:
    """math-verify's parse of one answer (wrapped in \\boxed{} so bare LaTeX is read)."""
    from math_verify import parse
    return parse("\\boxed{" + answer + "}", parsing_timeout=_timeout())


def _tame(expr) -> bool:
    """False if evaluating `expr` could take unbounded time: a numeric exponent or factorial
    argument over _LIMIT in absolute value (2^{2^{100}}, 10^{10^{10}}, 9!!!). Checked bottom-up,
    so each evaluated sub-expression was itself found tame."""
    import sympy
    from sympy.matrices import MatrixBase
    if isinstance(expr, MatrixBase):
        return all(_tame(e) for e in expr)
    if not isinstance(expr, sympy.Basic):
        return True
    if not all(_tame(a) for a in expr.args):
        return False
    bound = (expr.exp if isinstance(expr, sympy.Pow)
             else expr.args[0] if isinstance(expr, (sympy.factorial, sympy.factorial2,
                                                     sympy.subfactorial)) else None)
    return bound is None or not bound.is_number or abs(complex(bound.evalf(15))) <= _LIMIT


def _math(parsed: list):
    """The first sympy object math-verify found, if it is tame; else None."""
    import sympy
    from sympy.matrices import MatrixBase
    exprs = [p for p in parsed if isinstance(p, (sympy.Basic, MatrixBase))]
    return exprs[0] if exprs and _tame(exprs[0]) else None


def _text(answer: str) -> str:
    return " ".join(answer.split())


@functools.lru_cache(maxsize=65536)
def math_equal(gold: str | None, answer: str | None) -> bool:
    """Whether `answer` is equivalent to `gold` (both extracted answers: bare LaTeX or numbers),
    by math-verify's `verify(parse(gold), parse(answer))`, gold first (it is not symmetric).

    Equal as math-verify decides: 1/2 = \\frac{1}{2} = 0.5, 142 = 142.0, "5 \\text{ cm}" = 5,
    "x = 5" = 5, sets in any order, intervals by their brackets; decimals agree to 6 places
    (1/3 = 0.333333, not 0.3333). None or empty never equals anything. An answer math-verify
    does not parse, or one `_tame` refuses, equals only the same text (spaces ignored).

    >>> math_equal("\\\\frac{1}{2}", "0.5"), math_equal("(1,2]", "[1,2)"), math_equal("", "")
    (True, False, False)
    """
    if not gold or not answer or not gold.strip() or not answer.strip():
        return False
    parsed_gold, parsed = _parse(gold), _parse(answer)
    if _math(parsed_gold) is None or _math(parsed) is None:
        return _text(gold) == _text(answer)
    from math_verify import verify
    return bool(verify(parsed_gold, parsed, timeout_seconds=_timeout()))


def is_math_answer(answer: str | None) -> bool:
    """Whether math-verify reads a mathematical object in `answer` (a gold answer must be one)."""
    return bool(answer and answer.strip()) and _math(_parse(answer)) is not None


# ----------------------------------------------------------------------------- the vote key

def _number(value) -> Hashable:
    """A real number's key: its decimal value rounded to 6 places (math-verify's float_rounding),
    "142.0" -> "142", "-0" -> "0"; beyond 1e30 its 15 significant digits."""
    v = value.evalf(40)
    if abs(v) >= 10 ** 30:
        return ("number", str(v.evalf(15)))
    with localcontext() as ctx:
        ctx.prec = 80
        d = Decimal(str(v)).quantize(Decimal("1e-6"))
    return ("number", "0" if d == 0 else format(d.normalize(), "f"))


def _canonical(expr) -> Hashable:
    """The key of a sympy object: numbers by value, containers element by element, anything
    else as the string of expand(simplify(.)) with its floats made exact (0.5x -> x/2)."""
    import sympy
    from sympy.matrices import MatrixBase
    if isinstance(expr, sympy.Eq):       # an assignment votes with its value, as math-verify
        names = expr.lhs.args if isinstance(expr.lhs, sympy.Tuple) else (expr.lhs,)
        if all(isinstance(n, sympy.Symbol) for n in names):   # "x = 5": 5, "(x, y) = (2, 1)"
            return _canonical(expr.rhs)
    if isinstance(expr, MatrixBase):
        return ("matrix", expr.shape, tuple(_canonical(e) for e in expr))
    if isinstance(expr, sympy.Tuple):
        return ("tuple",) + tuple(_canonical(e) for e in expr)
    if isinstance(expr, sympy.FiniteSet):
        return ("set", frozenset(_canonical(e) for e in expr))
    if isinstance(expr, sympy.Interval):
        if expr.left_open and expr.right_open and expr.start.is_finite and expr.end.is_finite:
            return ("tuple", _canonical(expr.start), _canonical(expr.end))  # (1,2): pair or open
        return ("interval", expr.left_open, _canonical(expr.start), _canonical(expr.end),
                expr.right_open)
    if isinstance(expr, sympy.Expr) and expr.is_number:
        value = expr.doit().evalf(40)                # safe: _tame checked the expression
        if value.is_real and value.is_finite:
            return _number(value)
    if isinstance(expr, sympy.Basic):
        exact = expr.xreplace({f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)})
        return ("expr", str(sympy.expand(sympy.simplify(exact))))
    return ("text", str(expr))


@functools.lru_cache(maxsize=65536)
def math_key(answer: str | None) -> Hashable | None:
    """A vote key: equivalent answers get the same key, so they vote together. None for a
    missing or empty answer (rewards.answer_keys then gives it a key of its own: it never wins).

    What the key merges (a subset of math_equal; keys must be exact, math_equal may tolerate):
      - numbers by value rounded to 6 decimals: "1/2", "\\frac12", "0.5", "50\\%" -> 0.5;
        "142.0" -> 142; "1,000" -> 1000; units and "^\\circ" dropped by math-verify ("5\\text{ cm}");
      - "x = 5" with 5, "(x, y) = (2, 1)" with (2, 1) (an assignment keys as its right-hand side);
      - tuples element-wise, sets in any order, intervals by brackets and end points; an open
        interval "(1,2)" keys as the pair (1, 2);
      - other expressions by the string of sympy.expand(sympy.simplify(.)): "2x+1" with "1+2x",
        "(x+1)^2" with "x^2+2x+1";
      - anything math-verify cannot parse, `_tame` refuses, or sympy fails on ("\\emptyset",
        "x = y = 2"), by its text with spaces collapsed.
    Not merged, though math_equal may say equal: "0.7071" and "\\frac{\\sqrt2}{2}" (numbers that
    differ after 6 decimals), "10\\%" and "10".

    >>> math_key("\\\\frac{1}{2}") == math_key("0.5") == math_key("1/2"), math_key("  ")
    (True, None)
    """
    if not answer or not answer.strip():
        return None
    from math_verify.errors import TimeoutException     # a BaseException
    from math_verify.utils import timeout
    try:
        expr = _math(_parse(answer))
        if expr is None:
            return ("text", _text(answer))
        return timeout(timeout_seconds=_timeout())(_canonical)(expr)
    except (TimeoutException, Exception):  # noqa: BLE001  or sympy failing ("\\emptyset")
        return ("text", _text(answer))
