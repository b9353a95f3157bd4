"""Spec for math_answers.py: the boxed answer, math-verify grading, the vote key, the vote's
handling of empty answers, and that no answer text makes a vote or a grade raise. Fixed cases of
the forms TTRL's models box, then a property test of generated and adversarial strings."""
import doctest
import random
import threading
import time
import warnings

import pytest

import answers
import data
import math_answers
import rewards
from answers import answer_keys
from math_answers import extract_boxed, math_equal, math_key


def test_docstring_examples_run():
    result = doctest.testmod(math_answers)
    assert result.attempted >= 5 and result.failed == 0


def test_no_torch():
    source = open(math_answers.__file__).read()
    assert "import torch" not in source and "from torch" not in source


# ----------------------------------------------------------------------------- extract_boxed

@pytest.mark.parametrize("text, expected", [
    ("The answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),                  # nested braces
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),                  # two levels
    ("first \\boxed{3}, then \\boxed{4}", "4"),                                 # the last wins
    ("\\boxed{\\boxed{7}}", "7"),                                               # inner is last
    ("\\boxed {12}", "12"), ("\\fbox{5}", "5"),                                 # spelling variants
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),                                      # escaped braces
    ("\\boxed{ -3 }", "-3"),
    ("\\boxed{5\\text{ cm}}<|im_end|>", "5\\text{ cm}"),
    ("\\boxed{}", None), ("\\boxed{  }", None),                                 # empty box
    ("\\boxed{\\frac{1}{2}", None),                                             # cut off
    ("The answer is 42.", None), ("", None), (None, None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


# ----------------------------------------------------------------------------- math_equal

@pytest.mark.parametrize("gold, answer", [
    ("\\frac{1}{2}", "0.5"), ("\\frac{1}{2}", "1/2"), ("\\frac12", "\\dfrac{1}{2}"),
    ("142", "142.0"), ("-3", "-3.0"), ("1000", "1,000"),
    ("\\frac{1}{3}", "0.333333"),                                  # 6 decimals
    ("(1, 2)", "(1,2)"), ("\\{3, 4\\}", "\\{4, 3\\}"), ("[1, 2)", "[1,2)"),
    ("5", "5\\text{ cm}"), ("5", "5 \\text{ cm}"), ("90", "90^\\circ"), ("5", "x = 5"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"), ("2x+1", "1+2x"),
    ("\\text{Monday}", "\\text{monday}"),
])
def test_math_equal_true(gold, answer):
    assert math_equal(gold, answer)


@pytest.mark.parametrize("gold, answer", [
    ("-3", "3"), ("\\frac{1}{3}", "0.3333"), ("(1, 2)", "(2, 1)"), ("(1, 2]", "[1, 2)"),
    ("142", "143"), ("2x+1", "2x-1"), ("", ""), ("5", ""), ("", "5"), (None, "5"),
    ("5", "2^{2^{100}}"),                                          # refused by _tame: text
])
def test_math_equal_false(gold, answer):
    assert not math_equal(gold, answer)


def test_untamed_answers_compare_as_text():
    assert math_equal("2^{2^{100}}", "2^{2^{100}}") and math_equal("9!!!", " 9!!! ")
    assert not math_answers._tame(math_answers._parse("10^{10^{10}}")[0])
    assert math_answers._tame(math_answers._parse("2^{10}")[0])


def test_is_math_answer():
    assert math_answers.is_math_answer("\\frac{14}{3}") and math_answers.is_math_answer("(3, 4)")
    assert not math_answers.is_math_answer("??") and not math_answers.is_math_answer("  ")


# ----------------------------------------------------------------------------- math_key

@pytest.mark.parametrize("group", [
    ["1/2", "\\frac{1}{2}", "0.5", "\\dfrac12", "50\\%"],
    ["142", "142.0", "142 \\text{ cm}"],
    ["-3", "-3.0", "x = -3"],
    ["1000", "1,000"],
    ["\\frac{1}{3}", "0.333333"], ["0", "-0", "0.0"],              # 6 decimals
    ["(1,2)", "\\left( 1, 2 \\right)"],
    ["\\{3,4\\}", "\\{4,3\\}", "3, 4"],
    ["2x+1", "1+2x", "2 x + 1"],
    ["(x+1)^2", "x^2+2x+1"],
    ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"],
])
def test_equivalent_answers_share_a_key(group):
    keys = {math_key(a) for a in group}
    assert len(keys) == 1 and None not in keys


@pytest.mark.parametrize("a, b", [
    ("-3", "3"), ("(1,2)", "(2,1)"), ("[1,2)", "(1,2]"), ("\\frac{1}{3}", "0.3333"),
    ("2x+1", "2x-1"), ("\\{3,4\\}", "(3,4)"), ("142", "1420"),
])
def test_different_answers_get_different_keys(a, b):
    assert math_key(a) != math_key(b)


def test_empty_answer_has_no_key():
    assert math_key(None) is None and math_key("") is None and math_key("  ") is None
    assert math_key(extract_boxed("\\boxed{}")) is None


def test_keys_are_hashable_and_text_fallback():
    for a in ["(1,2)", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "[0, \\infty)", "??", "9!!!"]:
        hash(math_key(a))
    assert math_key("??") == ("text", "??") and math_key("9!!!") == ("text", "9!!!")


# ----------------------------------------------------------------------------- the vote

def test_empty_answers_never_win_and_get_reward_zero():
    texts = ["\\boxed{}", "no box at all", "\\boxed{}", "cut \\boxed{7", "\\boxed{3}"]
    keys = answer_keys([math_key(extract_boxed(t)) for t in texts])
    assert rewards.majority_reward(keys).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    none = answer_keys([math_key(extract_boxed(t)) for t in texts[:4]])
    assert rewards.majority_reward(none).tolist() == [0.0] * 4


def test_equivalent_answers_outvote_a_plain_plurality():
    # "0.5" and "1/2" are one answer: together they beat the two "3"s
    texts = ["\\boxed{3}", "\\boxed{3}", "\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{1/2}"]
    keys = answer_keys([math_key(extract_boxed(t)) for t in texts])
    assert rewards.majority_reward(keys).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- every kind of answer

MATH = data.Example("m", "q", [], "7", None, None)


@pytest.mark.parametrize("group", [
    ["(1,2)\\cup(3,4)", "(3,4)\\cup(1,2)", "(1, 2) \\cup (3, 4)"],                  # unions
    ["(-\\infty,1)\\cup(1,\\infty)", "\\mathbb{R}\\setminus\\{1\\}"],               # differences
    ["\\emptyset", "\\varnothing", "\\{\\}"],                                       # the empty set
    ["-2<x<3", "3>x>-2"],                                                           # chained
    ["[1,2]\\cap[1.5,3]", "[1.5,2]"],                                               # intersections
    ["\\mathbb{Z}"], ["\\mathbb{N}"], ["\\mathbb{R}", "(-\\infty, \\infty)"],       # number sets
    ["x \\le 3", "3 \\ge x"], ["x > 3", "3 < x"], ["x \\neq 3"],                    # relations
    ["\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"], ["\\{1, 2\\}\\cup\\{3\\}", "\\{1,2,3\\}"],
])
def test_set_valued_answers_vote_and_grade(group):
    keys = answers.vote_keys(["so \\boxed{" + a + "}" for a in group], MATH)
    assert len(set(keys)) == 1 and keys[0][0] != "text"      # canonical, not a fallback
    assert all(math_equal(a, a) for a in group)
    assert answers.majority(group + ["7"], MATH) == group[0]


@pytest.mark.parametrize("a, b", [
    ("(1,2)\\cup(3,4)", "(1,2)\\cup(3,5)"), ("\\mathbb{Z}", "\\mathbb{R}"), ("-2<x<3", "-2<x\\le3"),
    ("\\emptyset", "\\{0\\}"), ("x \\le 3", "x < 3"), ("x > 3", "x < 3"),
])
def test_different_sets_and_relations_get_different_keys(a, b):
    assert math_key(a) != math_key(b)


EQUAL_VALUE_CLASSES = {
    "scientific notation": ["1500000", "1.5e6", "1.5E6", "1.5e+6", "1.5\\times10^{6}",
                            "1.5 \\cdot 10^6"],
    "formatting wrappers": ["4", "\\text{4}", "\\mathbf{4}", "\\mathrm{4}", "\\textbf{4}",
                            "\\textbf{\\text{4}}"],
    "trailing punctuation": ["2005", "2005.", "\\text{2005}", "\\text{2005}.", "2005 ;"],
    "thousands separators": ["1000", "1 000", "1,000", "1{,}000", "1\\,000", "1\\ 000", "1~000"],
    "degree signs": ["30", "30°", "30^\\circ", "30^{\\circ}", "30 ^\\circ"],
    "words": ["Monday", "\\text{Monday}", "monday", "\\textbf{Monday}", "Monday."],
}


@pytest.mark.parametrize("name", list(EQUAL_VALUE_CLASSES))
def test_equal_values_share_one_vote_key(name):
    spellings = EQUAL_VALUE_CLASSES[name]
    keys = answers.vote_keys(["\\boxed{" + a + "}" for a in spellings], MATH)
    assert len(set(keys)) == 1 and keys[0][0] != "text", (name, keys)
    assert all(math_equal(spellings[0], a) for a in spellings), name


def test_large_numbers_in_scientific_notation():
    assert math_equal("1500000", "1.5e6") and math_key("1e400") == math_key("10^{400}")
    assert math_key("1e5") != math_key("1e6") != math_key("6")


def test_grade_match_is_ttrl_s_official_rule():
    texts = ["\\boxed{y=2x+1}", "\\boxed{y = 2x + 1}", "\\boxed{2x+1=y}", "\\boxed{5}", "none"]
    keys = answers.vote_keys(texts, MATH)
    assert rewards.majority_reward(keys).tolist() == [1, 1, 0, 0, 0]        # key equality
    same = answers.grade_match(texts, MATH)
    assert rewards.compute_rewards("majority", keys, match="grade", same=same).tolist() == [
        1, 1, 1, 0, 0]                          # 2x+1=y grades equal to the winner y=2x+1
    with pytest.raises(ValueError, match="same"):
        rewards.majority_reward(keys, match="grade")


# ----------------------------------------------------------------------------- no answer raises

FRAGMENTS = ["\\frac", "{", "}", "1", "0", "x", "^", "_", "\\sqrt", "(", ")", "[", "]", "\\cup",
             "\\cap", ",", "<", "\\le", "=", "\\infty", "\\pi", "e", "E", ".", "-", "+", "/", "!",
             "\\text{", "\\mathbb{Z}", "\\emptyset", "\\{", "\\}", "10", "999", "\\begin{pmatrix}",
             "\\end{pmatrix}", "&", "\\\\", "°", "é", "中", "\\boxed{", " ", "%", "\\%", "$",
             "|", "\\left(", "\\right)", "\\cdot", "\\times", "\\sin", "\\log", "\\in", "\\setminus",
             "\\mathbb{R}", "\\neq", "'", '"', "\\", "\n", "\t", "\\mathbf{", "e6", "1.5e", "!!"]
ADVERSARIAL = [
    "10^10^10", "10^{10^{10}}", "2^{2^{100}}", "9!!!", "(10^{100})^{1000}", "1e999999",
    "1" * 5000, "9" * 100 + "!", "\\frac{1}{0}", "0^0", "\\infty-\\infty", "0/0", "x^{x^{x^{x}}}",
    "{" * 200, "}" * 200, "\\boxed{" * 50, "\\left(" * 100, "((((", "a" * 3000, "∞", "√2", "½",
    "①", "مرحبا", "🙂", "\x00", "\\text{", "\\begin{pmatrix}1&2\\\\3\\end{pmatrix}",
    "\\mathbb{N}\\cup\\mathbb{Z}", "[1,0]", "(1,1)", "\\{1,1\\}", "x<y<z<w", "\\neg x",
    "x \\lor y", "\\text{True}", "\\top", "\\sum_{n=1}^{\\infty} 1/n", "\\int_0^1 x dx",
    "\\lim_{x\\to0} x", "f(x)", "\\log(0)", "\\sqrt{-1}", "i^i", "10^{1000}", "10^{-1000}",
    "1.5e-400", "99999999999999999999999999999999999.5", "0.\\overline{3}", "1,2,3,4,5,6,7,8,9",
    "\\mathbb{C}\\setminus\\mathbb{R}", "\\{x | x > 0\\}", "\\mathbb{Z}^+", "[0,1]\\times[0,1]",
    "x \\in \\emptyset", "\\emptyset\\cup\\emptyset", "1e5e5", "1.2.3", "- - -", "...",
]
# a bound on each call's CPU time (not the wall clock, which other processes share): math-verify's
# parse (5 s) + verify (5 s) + our canonical form (5 s), with room to spare
CALL_SECONDS = 20.0


def generated(count=200, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12)))
            for _ in range(count)]


def test_no_answer_text_makes_the_vote_or_the_grade_raise():
    """Generated and adversarial strings through extraction, key, majority and grade, as
    responses (boxed and bare) and as gold answers: no exception, each call's CPU time bounded."""
    strings = generated() + ADVERSARIAL
    slowest, found = 0.0, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in strings:
            for call in (lambda: answers.extract("so \\boxed{" + s + "}", MATH),
                         lambda: answers.extract(s, MATH), lambda: math_key(s),
                         lambda: answers.grade(s, MATH), lambda: math_equal(s, s),
                         lambda: math_equal(s, "7"), lambda: math_answers.is_math_answer(s)):
                start = time.process_time()
                call()
                slowest = max(slowest, time.process_time() - start)
            found.append(answers.extract("\\boxed{" + s + "}", MATH))
        for i in range(0, len(found), 16):                  # maj@16 over each block
            start = time.process_time()
            answers.grade(answers.majority(found[i:i + 16], MATH), MATH)
            answers.vote_keys(["\\boxed{" + s + "}" for s in strings[i:i + 16]], MATH)
            slowest = max(slowest, time.process_time() - start)
    assert slowest < CALL_SECONDS, slowest


def test_fallbacks_are_counted_and_warned_once_per_reason():
    math_answers.take_fallbacks()
    math_answers._WARNED.clear()
    with pytest.warns(UserWarning, match="compared as text") as caught:
        for _ in range(3):
            assert math_key("??") == ("text", "??")            # cached after the first: counted
        assert math_key("9!!!") == ("text", "9!!!") and math_key("4") == ("number", "4")
        assert math_equal("??", " ?? ") and not math_equal("5", "??") and not math_equal("?", "!")
    assert len(caught) == 1                                       # one reason, one warning
    assert math_answers.take_fallbacks() == {"key": 4, "grade": 2}
    assert math_answers.take_fallbacks() == {"key": 0, "grade": 0}


# ----------------------------------------------------------------------------- threads

def test_works_outside_the_main_thread():
    out, errors = [], []
    math_answers._key.cache_clear()
    math_answers._equal.cache_clear()

    def work():
        try:
            out.append((math_key("3/4"), math_equal("0.75", "\\frac34"), math_equal("-1", "1")))
        except Exception as err:  # noqa: BLE001 - the assertion reports it
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == [] and out == [(("number", "0.75"), True, False)]
