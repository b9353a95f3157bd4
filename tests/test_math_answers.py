"""Spec for math_answers.py (re-exported by rewards): the boxed answer, math-verify grading, the
vote key, and the vote's handling of empty answers. Fixed cases of the forms TTRL's models box."""
import doctest
import threading

import pytest

import math_answers
import rewards
from rewards import extract_boxed, math_equal, math_key


def test_docstring_examples_run():
    result = doctest.testmod(math_answers)
    assert result.attempted >= 5 and result.failed == 0


def test_no_torch_and_reexported_by_rewards():
    source = open(math_answers.__file__).read()
    assert "import torch" not in source and "from torch" not in source
    assert rewards.extract_boxed is math_answers.extract_boxed
    assert rewards.math_equal is math_answers.math_equal and rewards.math_key is math_answers.math_key


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
    keys = rewards.answer_keys([math_key(extract_boxed(t)) for t in texts])
    assert rewards.majority_reward(keys).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    none = rewards.answer_keys([math_key(extract_boxed(t)) for t in texts[:4]])
    assert rewards.majority_reward(none).tolist() == [0.0] * 4


def test_equivalent_answers_outvote_a_plain_plurality():
    # "0.5" and "1/2" are one answer: together they beat the two "3"s
    texts = ["\\boxed{3}", "\\boxed{3}", "\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{1/2}"]
    keys = rewards.answer_keys([math_key(extract_boxed(t)) for t in texts])
    assert rewards.majority_reward(keys).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- threads

def test_works_outside_the_main_thread():
    out, errors = [], []

    def work():
        try:
            out.append((math_key.__wrapped__("3/4"), math_equal.__wrapped__("0.75", "\\frac34"),
                        math_equal.__wrapped__("-1", "1")))
        except Exception as err:  # noqa: BLE001 - the assertion reports it
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == [] and out == [(("number", "0.75"), True, False)]
