"""The vote on math answers through the loop's own path: answers.extract / key / vote_keys (what
ttrv.score votes with), answers.majority and grade (what eval.py's maj@K and accuracy use), and
ttrv.score itself. Each test fails when a piece of that path is removed or inverted: equivalent
answers written differently must share one key, different answers must not, and a response
without a boxed answer never answers. Fixed texts only, no model."""

import numpy as np
import pytest

import answers
import data
import math_answers
import rewards
import ttrv
from harness.config import Config

@pytest.fixture(autouse=True)
def no_wall_clock_timeouts(monkeypatch):
    """math-verify's timeouts are wall-clock (signal.alarm): on a loaded machine a parse can run
    out and its key fall back to text. The key is tested here, not the timeout (_tame bounds
    the work), so they are off, as in a worker thread; the caches start and end empty."""
    monkeypatch.setattr(math_answers, "_timeout", lambda: None)
    math_answers._key.cache_clear(), math_answers._equal.cache_clear()
    yield
    math_answers._key.cache_clear(), math_answers._equal.cache_clear()


HALF = ["\\boxed{\\frac12}", "\\boxed{0.5}", "so it is \\boxed{\\dfrac{1}{2}}", "\\boxed{1/2}"]


def question(gold="\\frac{1}{2}"):
    return data.Example("m", "What is 1/2?", [], gold, None, None)


def keys(texts, no_answer="own"):
    return answers.vote_keys(texts, question(), no_answer=no_answer)


def test_one_half_written_four_ways_is_one_key_through_vote_keys():
    k = keys(HALF)
    assert len(set(k)) == 1 and not isinstance(k[0], rewards.NoAnswer)
    assert answers.key(answers.extract(HALF[0], question()), question()) == k[0]


def test_different_numbers_are_different_keys():
    two, three, half = keys(["\\boxed{2}", "\\boxed{3}", "\\boxed{0.5}"])
    assert len({two, three, half}) == 3
    assert keys(["\\boxed{2}", "\\boxed{2.0}"])[0] == keys(["\\boxed{2}"])[0]


@pytest.mark.parametrize("text", ["the answer is 1/2", "1/2", "\\boxed{}", "\\boxed{ }",
                                  "cut off: \\boxed{\\frac{1}{2}"])
def test_a_response_without_a_closed_nonempty_box_answers_nothing(text):
    assert answers.extract(text, question()) is None
    assert isinstance(keys([text])[0], rewards.NoAnswer)


def test_the_last_box_is_the_answer():
    assert keys(["\\boxed{3}, no wait: \\boxed{\\frac{1}{2}}"])[0] == keys(["\\boxed{0.5}"])[0]


def test_assignments_sets_and_rounding_through_vote_keys():
    same = [("\\boxed{x = 5}", "\\boxed{5}"), ("\\boxed{\\{3, 4\\}}", "\\boxed{\\{4, 3\\}}"),
            ("\\boxed{\\frac{1}{3}}", "\\boxed{0.333333}"),
            ("\\boxed{(x, y) = (2, 1)}", "\\boxed{(2, 1)}"),
            ("\\boxed{(a, b, c) = (1, 2, 3)}", "\\boxed{(1, 2, 3)}"),
            ("\\boxed{(1, 2)}", "\\boxed{(1; 2)}")]            # the open interval keys as the pair
    for a, b in same:
        assert keys([a, b])[0] == keys([a, b])[1], (a, b)
    differ = [("\\boxed{\\frac{1}{3}}", "\\boxed{0.333}"), ("\\boxed{(2, 1)}", "\\boxed{(1, 2)}"),
              ("\\boxed{(a, b) = (1, 2)}", "\\boxed{(a, b) = (3, 4)}"),
              ("\\boxed{\\{3, 4\\}}", "\\boxed{(3, 4)}")]
    for a, b in differ:
        assert keys([a, b])[0] != keys([a, b])[1], (a, b)


@pytest.mark.parametrize("text", ["\\boxed{\\emptyset}", "\\boxed{x = y = 2}"])
def test_answers_sympy_cannot_canonicalise_vote_by_their_text_instead_of_crashing(text):
    k = keys([text, text + " ", "\\boxed{7}"])
    assert k[0] == k[1] != k[2]


def test_unparseable_answers_vote_by_their_text_with_spaces_collapsed():
    a, b, c = keys(["\\boxed{?? !}", "\\boxed{??   !}", "\\boxed{?? ?}"])
    assert a == b != c


# ----------------------------------------------------------------------------- the loop's score

def score(texts, reward="majority", no_answer="own"):
    cfg = Config(reward=reward, no_answer=no_answer)
    return ttrv.score(texts, question(), cfg, np.random.default_rng(0))


def test_equivalent_answers_outvote_a_plurality_of_one_written_form():
    texts = ["\\boxed{3}", "\\boxed{3}", "\\boxed{3}"] + HALF
    r, entropy, share = score(texts)
    assert r.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert share == pytest.approx(4 / 7)
    assert entropy == pytest.approx(-(3 / 7) * np.log(3 / 7) - (4 / 7) * np.log(4 / 7))


def test_unboxed_numbers_never_vote():
    r, _, share = score(["7", "7", "the answer is 7", "\\boxed{8}"])
    assert r.tolist() == [0, 0, 0, 1] and share == pytest.approx(1 / 4)


def test_the_no_answer_policy_reaches_the_math_vote():
    texts = ["no idea", "no idea", "no idea", "\\boxed{7}", "\\boxed{7}"]
    assert score(texts, no_answer="own")[0].tolist() == [0, 0, 0, 1, 1]
    assert score(texts, no_answer="pool")[0].tolist() == [1, 1, 1, 0, 0]    # pooled: 3 beat 2
    assert score(texts, no_answer="text")[0].tolist() == [1, 1, 1, 0, 0]    # same text: 3


def test_the_ttrv_reward_counts_equivalent_answers_together():
    r, _, _ = score(["\\boxed{3}", "\\boxed{0.5}", "\\boxed{1/2}", "\\boxed{\\frac12}"],
                    reward="frequency")
    assert r.tolist() == [0.25, 0.75, 0.75, 0.75]


# ----------------------------------------------------------------------------- maj@K and grade

def test_majority_counts_keys_and_answers_with_its_first_written_form():
    q = question()
    assert answers.majority(["3", "0.5", "1/2"], q) == "0.5"        # 0.5 = 1/2 outvote 3
    assert answers.majority(["0.5", "3", "1/2", "3"], q) == "0.5"   # tie: the first seen wins
    assert answers.majority(["3", "0.5", "1/2", "3"], q) == "3"


def test_a_majority_of_unanswered_samples_never_wins():
    assert answers.majority([None, None, None, "7"], question()) == "7"
    assert answers.majority([None, None], question()) is None


@pytest.mark.parametrize("gold, answer, value", [
    ("\\frac{1}{2}", "0.5", 1.0), ("0.5", "1/2", 1.0), ("\\frac12", "\\dfrac{1}{2}", 1.0),
    ("2", "3", 0.0), ("2", None, 0.0)])
def test_grade_is_equivalence_to_the_gold_answer(gold, answer, value):
    assert answers.grade(answer, question(gold)) == value
