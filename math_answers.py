"""Math answers for TTRL and DARE on text LLMs: the boxed answer, its equivalence, its vote key.

    response --extract_boxed--> answer --math_key--> vote key (answers.vote_keys, majority)
    answer, gold --math_equal--> correct?             (accuracy, avg@K, maj@K)

We follow TTRL's **August 2025** code (26413fa), not the May 2025 code of the paper's numbers
(methods-notes section 1): only a boxed answer counts (no box: no vote, reward 0); the vote key
is a canonical form of the answer (docs/math-answers.md). Departure from the August code: an
empty \\boxed{} is no answer here (there it votes as "" and can win).

Grading is math-verify (`verify(parse(gold), parse(answer))`, gold first) after `_prepare`
tidies both texts as the key does. Its timeouts (signal.alarm) work in the main thread only:
elsewhere they are off, and `_tame` refuses beforehand what can run for minutes (2^{2^{100}}).
No answer text makes anything here raise: what is not read as math is compared by its tidied
text, counted in FALLBACKS (`take_fallbacks()` reads and resets it) and warned once per reason.

>>> extract_boxed("so \\\\boxed{\\\\frac{1}{2}}, no: \\\\boxed{\\\\frac{1}{3}}")
'\\\\frac{1}{3}'
>>> math_equal("0.5", "\\\\frac{1}{2}"), math_key("1/2") == math_key("0.5")
(True, True)
"""
from __future__ import annotations

import functools
import math
import re
import threading
import warnings
from collections import Counter
from decimal import Decimal, localcontext
from typing import Hashable

FALLBACKS: Counter = Counter()   # answers keyed ("key") or graded ("grade") by their text
_WARNED: set = set()


def take_fallbacks() -> dict:
    """The fallback counts since the last call ({"key": n, "grade": m}), then zero them."""
    out, _ = {"key": FALLBACKS["key"], "grade": FALLBACKS["grade"]}, FALLBACKS.clear()
    return out


def _fallback(kind: str, answer: str, why: str) -> None:
    FALLBACKS[kind] += 1
    if why not in _WARNED:   # once per reason: a run may see thousands
        _WARNED.add(why), warnings.warn(f"math answer {answer[:60]!r} {why}; such answers are "
                                        "compared as text (math_answers.FALLBACKS).", stacklevel=3)


# ----------------------------------------------------------------------------- the text

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_boxed(text: str | None) -> str | None:
    """Content of the LAST \\boxed{...} (or \\boxed {...}, \\fbox{...}), nested braces matched,
    escaped \\{ \\} kept as text; None for no box, an empty box, or one never closed (a response
    cut off at the token limit). Our choice: "\\boxed 5" without braces is not read.

    >>> [extract_boxed(t) for t in ["\\\\boxed{1}\\\\boxed{2}", "\\\\boxed{ }", "\\\\boxed{3", ""]]
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

_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|textit|mathbf|mathrm|mathit|boldsymbol|bm|mbox)"
                      r"\s*\{((?:[^{}]|\{[^{}]*\})*)\}")          # one level of braces inside
_SCI = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")       # 1.5e6
_GROUPS = re.compile(r"(?<![\d.,])\d{1,3}(?:(?:\s|\\[ ,;:!]|~)\d{3})+(?!\d)")      # 1 000
_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|[ '-])*[^\W\d_]")   # a word: two or more letters


def _prepare(answer: str) -> str:
    """The answer as both the key and the grade read it: spaces collapsed, a whole-answer
    formatting wrapper removed (\\text{4}, \\mathbf{4} -> 4), a trailing ".", "," or ";" dropped,
    ° as ^\\circ, \\varnothing as \\emptyset, 1.5e6 as 1.5\\times10^{6}, thousands separated by
    spaces (1 000, 1\\,000, 1~000) joined."""
    s = " ".join(answer.split()).replace("°", "^\\circ").replace("\\varnothing", "\\emptyset")
    while True:                                  # \text{\textbf{4}}. -> 4
        i = len(s)
        while i > 1 and s[i - 1] in " .,;" and s[i - 2] != "\\":   # not "\," (a thin space)
            i -= 1
        t = m.group(1).strip() if (m := _WRAPPER.fullmatch(s[:i])) else s[:i]
        if t == s:
            break
        s = t
    s = _SCI.sub(lambda m: f"{m.group(1)}\\times10^{{{m.group(2)}}}", s)
    return _GROUPS.sub(lambda m: re.sub(r"\D", "", m.group(0)), s)


# ----------------------------------------------------------------------------- math-verify

# largest exponent or factorial, power in bits, answer in characters evaluated (our choices)
_LIMIT, _LIMIT_BITS, _MAX_CHARS = 1000, 10 ** 5, 1000


def _timeout() -> int | None:
    """math-verify's timeout: 5 s in the main thread, off elsewhere (signal.alarm raises)."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def _parse(answer: str) -> list:
    """math-verify's parse of a tidied answer in \\boxed{} (bare LaTeX is read only there)."""
    if len(answer) > _MAX_CHARS:
        return []
    from math_verify import parse
    return parse("\\boxed{" + answer + "}", parsing_timeout=_timeout())


def _tame(expr) -> bool:
    """False if evaluating `expr` could take unbounded time: a numeric exponent or factorial
    argument over _LIMIT (2^{2^{100}}, 9!!!), a power over _LIMIT_BITS bits; checked bottom-up."""
    import sympy
    from sympy.matrices import MatrixBase
    if isinstance(expr, MatrixBase):
        return all(_tame(e) for e in expr)
    if not all(_tame(a) for a in expr.args):
        return False
    bound = (expr.exp if isinstance(expr, sympy.Pow)
             else expr.args[0] if isinstance(expr, (sympy.factorial, sympy.factorial2,
                                                     sympy.subfactorial)) else None)
    if bound is None or not bound.is_number:
        return True
    exponent, size = abs(complex(bound.evalf(15))), 2.0
    if isinstance(expr, sympy.Pow) and expr.base.is_number:
        size = abs(complex(expr.base.evalf(15)))
    return exponent <= _LIMIT and (not math.isfinite(size)
                                   or exponent * math.log2(max(size, 2.0)) <= _LIMIT_BITS)


def _math(parsed: list):
    """The first sympy object math-verify found, if it is tame; else None."""
    import sympy
    from sympy.matrices import MatrixBase
    exprs = [p for p in parsed if isinstance(p, (sympy.Basic, MatrixBase))]
    return exprs[0] if exprs and _tame(exprs[0]) else None


@functools.lru_cache(maxsize=65536)
def _equal(gold: str, answer: str) -> tuple[bool, str | None]:
    """(verdict, why it fell back to text or None) for two tidied, non-empty answers."""
    if gold == answer or (_WORD.fullmatch(gold) and _WORD.fullmatch(answer)):   # not products
        return gold.casefold() == answer.casefold(), None
    try:
        parsed_gold, parsed = _parse(gold), _parse(answer)
        if _math(parsed_gold) is None or _math(parsed) is None:
            return gold == answer, "is not read as math or is too large to evaluate"
        from math_verify import verify
        return bool(verify(parsed_gold, parsed, timeout_seconds=_timeout())), None
    except Exception as err:  # noqa: BLE001 - a grade never raises on an answer's text
        return gold == answer, f"could not be graded ({type(err).__name__})"


def math_equal(gold: str | None, answer: str | None) -> bool:
    """Whether `answer` is equivalent to `gold` (extracted answers), by math-verify's
    `verify(parse(gold), parse(answer))`, gold first (not symmetric), after `_prepare`.

    Equal as math-verify decides (1/2 = \\frac{1}{2} = 0.5, 142 = 142.0, "5 \\text{ cm}" = 5,
    "x = 5" = 5, sets in any order, decimals to 6 places), after tidying also 1500000 = 1.5e6,
    4 = "4." = \\text{4}, 1000 = "1 000", 30 = 30°. None or empty never equals anything; an
    answer that is not read as math equals only the same tidied text (counted in FALLBACKS).

    >>> math_equal("\\\\frac{1}{2}", "0.5"), math_equal("(1,2]", "[1,2)"), math_equal("", "")
    (True, False, False)
    >>> math_equal("1500000", "1.5e6"), math_equal("4", "\\\\text{4}."), math_equal("30", "30°")
    (True, True, True)
    """
    if not gold or not answer or not gold.strip() or not answer.strip():
        return False
    verdict, why = _equal(_prepare(gold), _prepare(answer))
    if why is not None:
        _fallback("grade", answer, why)
    return verdict


def is_math_answer(answer: str | None) -> bool:
    """Whether math-verify reads a mathematical object in `answer` (a gold answer must be one)."""
    try:
        return bool(answer and answer.strip()) and _math(_parse(_prepare(answer))) is not None
    except Exception:  # noqa: BLE001 - not math, then
        return False


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


def _expression(expr) -> Hashable:
    """Key of a non-numeric expression: expand(simplify(.)) with its floats made exact."""
    import sympy
    exact = expr.xreplace({f: sympy.Rational(str(f)) for f in expr.atoms(sympy.Float)})
    return ("expr", str(sympy.expand(sympy.simplify(exact))))


def _canonical(expr) -> Hashable:
    """The key of any sympy object math-verify returns: numbers by value, containers element by
    element, sets after sympy evaluates them, relations as one side minus the other, logic by
    its parts, other expressions by `_expression`, anything else by its type and arguments."""
    import sympy
    from sympy.logic.boolalg import And, Or
    from sympy.matrices import MatrixBase
    if isinstance(expr, sympy.Eq) and all(isinstance(n, sympy.Symbol) for n in (  # "x = 5": 5,
            expr.lhs.args if isinstance(expr.lhs, sympy.Tuple) else [expr.lhs])):  # (x, y) = (2, 1)
        return _canonical(expr.rhs)                  # an assignment votes with its value
    if isinstance(expr, MatrixBase):
        return ("matrix", expr.shape, tuple(_canonical(e) for e in expr))
    if isinstance(expr, sympy.Tuple):
        return ("tuple",) + tuple(_canonical(e) for e in expr)
    if isinstance(expr, (sympy.Union, sympy.Intersection, sympy.Complement)):
        expr = expr.func(*expr.args)                 # evaluate: [1,2]\cap[1.5,3] -> [1.5,2]
    if isinstance(expr, (sympy.FiniteSet, type(sympy.S.EmptySet))):
        return ("set", frozenset(_canonical(e) for e in expr))
    if isinstance(expr, sympy.Interval):
        if expr.left_open and expr.right_open and expr.start.is_finite and expr.end.is_finite:
            return ("tuple", _canonical(expr.start), _canonical(expr.end))  # (1,2): pair or open
        return ("interval", expr.left_open, _canonical(expr.start), _canonical(expr.end),
                expr.right_open)
    if isinstance(expr, (sympy.Union, And, Or)):     # parts in any order
        return (type(expr).__name__, frozenset(_canonical(a) for a in expr.args))
    if isinstance(expr, sympy.core.relational.Relational):
        op, lhs, rhs = expr.rel_op, expr.lhs, expr.rhs
        if op in (">", ">="):                        # x > 3 is 3 < x
            op, lhs, rhs = op.replace(">", "<"), rhs, lhs
        side = _expression(lhs - rhs)
        if op in ("==", "!="):                       # a = b is b = a
            side = min(side, _expression(rhs - lhs))
        return ("relation", op, side)
    if isinstance(expr, sympy.Expr) and expr.is_number:
        value = expr.doit().evalf(40)                # safe: _tame checked the expression
        if value.is_real and value.is_finite:
            return _number(value)
    if isinstance(expr, sympy.Expr):
        return _expression(expr)
    if isinstance(expr, sympy.Basic):                # number sets, booleans, Not, unevaluated sets
        return (type(expr).__name__,) + tuple(_canonical(a) for a in expr.args)
    return ("text", str(expr))


@functools.lru_cache(maxsize=65536)
def _key(answer: str) -> tuple[Hashable, str | None]:
    """(key, why it fell back to text or None) of a tidied, non-empty answer."""
    if _WORD.fullmatch(answer):
        return ("word", answer.casefold()), None     # Monday = \text{Monday} = monday
    from math_verify.errors import TimeoutException
    from math_verify.utils import timeout
    try:
        expr = _math(_parse(answer))
        if expr is None:
            return ("text", answer), "is not read as math or is too large to evaluate"
        return timeout(timeout_seconds=_timeout())(_canonical)(expr), None
    except TimeoutException:
        return ("text", answer), "took too long to canonicalise"
    except Exception as err:  # noqa: BLE001 - a vote never raises on an answer's text
        return ("text", answer), f"could not be canonicalised ({type(err).__name__})"


def math_key(answer: str | None) -> Hashable | None:
    """A vote key: equivalent answers get the same key, so they vote together. None for a
    missing or empty answer (answers.answer_keys then gives it a key of its own: it never wins).

    After `_prepare`: numbers by value to 6 decimals; "x = 5" as 5; tuples element-wise; sets in
    any order, after sympy evaluates unions, intersections and differences; intervals by brackets
    and end points (an open "(1,2)" as the pair); number sets by name; relations as lhs - rhs
    (x > 3 as 3 < x), chained ones by their parts; a word of two or more letters case-folded;
    other expressions by str(expand(simplify(.))); the rest by its tidied text (in FALLBACKS).
    docs/math-answers.md: where this is coarser or finer than math_equal and the official vote.

    >>> math_key("\\\\frac{1}{2}") == math_key("0.5") == math_key("1/2"), math_key("  ")
    (True, None)
    >>> math_key("1.5e6") == math_key("1 500 000"), math_key("May") == math_key("\\\\text{may}")
    (True, True)
    """
    if not answer or not answer.strip():
        return None
    key, why = _key(_prepare(answer))
    if why is not None:
        _fallback("key", answer, why)
    return key
