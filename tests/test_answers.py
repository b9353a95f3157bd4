"""Spec for answers.py: the two letter readers (ours, "paper", and the official TTRV code's),
numbers, the no-answer policies, and the vote keys of each kind of question. The official
reader's cases are built from the official code's documented behaviour (docs/protocols.md)."""
import doctest

import numpy as np
import pytest

import answers
import data
import rewards
from answers import (
    answer_keys, extract_choice, extract_choice_official, extract_number, official_no_answer_text,
    vote_keys,
)
from rewards import NoAnswer, frequency_reward


def test_docstring_examples_run():
    result = doctest.testmod(answers)
    assert result.attempted >= 10 and result.failed == 0


# ----------------------------------------------------------------------------- extract_choice

@pytest.mark.parametrize("text, expected", [
    ("B", "B"),
    ("B.", "B"),
    ("(B)", "B"),
    ("B)", "B"),
    ("Answer: B", "B"),
    ("answer: B", "B"),
    ("The answer is B", "B"),
    ("The answer is B.", "B"),
    ("The correct answer is: (D).", "D"),
    ("**B**", "B"),
    ("Answer: **C**<|im_end|>", "C"),
    ("B. golf course", "B"),
    ("(A) 12", "A"),
    ("C. airport (D is a close second)", "C"),
    ("Answer: C. Option D is wrong.", "C"),
    ("I think it is C", "C"),
    ("B  \n", "B"),
    ("  B", "B"),
    ("B<|im_end|>", "B"),
    ("B</s>", "B"),
    ("B<|endoftext|>", "B"),
    ("b", "B"),
    ("b.", "B"),
    ("(b)", "B"),
    ("a", "A"),
    ("A", "A"),
    ("a golf course", None),
    ("The image shows a golf course.", None),
    ("the answer is a golf course", None),
    ("option b", None),
    ("golf course", None),
    ("", None),
    ("E", None),
    ("The answer is E", None),
    ("ABC", None),
])
def test_extract_choice_four_options(text, expected):
    assert extract_choice(text) == expected


@pytest.mark.parametrize("text, num_options, expected", [
    ("E", 6, "E"),
    ("F.", 6, "F"),
    ("The answer is E", 5, "E"),
    ("G", 6, None),
    ("f", 6, "F"),
    ("B", 2, "B"),
    ("C", 2, None),
    ("Answer: C", 4, "C"),
])
def test_extract_choice_other_option_counts(text, num_options, expected):
    assert extract_choice(text, num_options) == expected


def test_extract_choice_reads_capital_article_as_a_like_official_code():
    assert extract_choice("A golf course.") == "A"


def test_extract_choice_rejects_impossible_option_counts():
    with pytest.raises(ValueError):
        extract_choice("A", 0)
    with pytest.raises(ValueError):
        extract_choice("A", 27)


# ----------------------------------------------------------------------------- extract_number

@pytest.mark.parametrize("text, expected", [
    ("\\boxed{12}", 12.0),
    ("There are 3 cars, so \\boxed{7}.", 7.0),
    ("first \\boxed{2} then \\boxed{5}", 5.0),
    ("\\boxed{\\text{42}}", 42.0),
    ("\\boxed{12 apples}", 12.0),
    ("I count 1,234 people", 1234.0),
    ("about 12.5 on average", 12.5),
    ("the change is -3", -3.0),
    ("3 dogs and 4 cats, total 7.", 7.0),
    ("\\boxed{1,000,000}", 1e6),
    ("pages 3-4", 4.0),
    ("H2O", None),
    ("\\boxed{none}", None),
    ("no idea", None),
    ("", None),
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


# ----------------------------------------------------------------------------- no-answer policies

def test_answers_become_their_own_keys():
    assert answer_keys(["A", "B", 3.0]) == ["A", "B", 3.0]


def test_policy_own_gives_each_unanswered_response_a_distinct_key():
    keys = answer_keys(["A", None, None, "A"], no_answer="own")
    assert keys[1] != keys[2] and keys[1] != "A"
    assert frequency_reward(keys).tolist() == [0.5, 0.25, 0.25, 0.5]


def test_policy_own_is_the_default():
    assert answer_keys(["A", None, None]) == answer_keys(["A", None, None], no_answer="own")


def test_policy_pool_shares_one_key_among_unanswered_responses():
    keys = answer_keys(["A", None, None, "A"], no_answer="pool")
    assert keys[1] == keys[2] and keys[1] != "A"
    assert frequency_reward(keys).tolist() == [0.5, 0.5, 0.5, 0.5]


def test_policy_text_pools_identical_stripped_texts():
    texts = ["A", "a cat", " a cat ", "a dog"]
    keys = answer_keys(["A", None, None, None], texts=texts, no_answer="text")
    assert keys[1] == keys[2] != keys[3]
    assert frequency_reward(keys).tolist() == [0.25, 0.5, 0.5, 0.25]


def test_no_answer_key_never_equals_a_real_answer():
    keys = answer_keys(["no answer", None], texts=["x", "no answer"], no_answer="text")
    assert keys[0] != keys[1] and isinstance(keys[1], NoAnswer)


def test_policy_text_needs_texts():
    with pytest.raises(ValueError):
        answer_keys(["A", None], no_answer="text")


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError):
        answer_keys(["A"], no_answer="drop")


# ----------------------------------------------------------------------------- the official reader
# Rules of the official TTRV code's letter reader (choice_answer_clean_gpqa, docs/protocols.md):
# trim (newlines, trailing "." and "/", spaces, leading ":"), upper-case, take the last A-D that no
# letter, digit or "_" touches; with none, the text trimmed again is the answer.

@pytest.mark.parametrize("text, expected", [
    ("B", "B"), ("b", "B"), ("(c)", "C"), ("B.", "B"), ("**D**", "D"), ("D<|im_end|>", "D"),
    ("The answer is B, not D.", "D"),          # the last letter wins, no "answer is" rule
    ("a golf course", "A"),                    # upper-cased first: the article is option A
    ("I choose A, then c", "C"), ("A-B", "B"), (":A/", "A"), ("answer:\nB\n", "B"),
    ("E", None), ("The answer is E", None),    # A-D only
    ("B_2", None), ("B2", None), ("2B", None), ("ABC", None), ("Bé", None),   # \w beside it
    ("golf course", None), ("", None),
])
def test_official_reader(text, expected):
    assert extract_choice_official(text) == expected


def test_official_reader_reads_a_to_d_whatever_the_options():
    assert extract_choice_official("D", 2) == "D" and extract_choice_official("E", 6) is None


@pytest.mark.parametrize("text, paper, official", [
    ("The answer is B, not D.", "B", "D"), ("a golf course", None, "A"),
    ("B. golf course, or maybe C", "B", "C"), ("Bé", "B", None), ("B_2", "B", None),
    ("E", None, None),
])
def test_where_the_two_readers_differ(text, paper, official):
    assert (extract_choice(text), extract_choice_official(text)) == (paper, official)


@pytest.mark.parametrize("text, expected", [
    (" golf course.\n", "golf course"), ("golf course/.", "golf course"),
    ("golf course./", "golf course"), (": golf/ ", "golf"), ("::golf", "golf"),
    ("...golf...", "golf"), ("golf:", "golf:"), ("\t golf \t", "golf"), ("", ""),
])
def test_official_no_answer_text(text, expected):
    assert official_no_answer_text(text) == expected


def choice(options=("cat", "dog", "eel", "fox")):
    return data.Example("x", "q", list(options), "B", None, None)


def test_official_reader_pools_texts_as_the_official_code():
    texts = ["golf course.", "golf course", " golf course/", "D"]
    paper = vote_keys(texts, choice(), no_answer="text")
    official = vote_keys(texts, choice(), no_answer="text", reader="official")
    assert len(set(paper)) == 4 and paper[3] == "D"
    assert official == [NoAnswer("golf course")] * 3 + ["D"]


def official_rewards(answers, alpha=0.75):
    """The official reward from its documented formula: the vote share of each response's
    answer minus alpha times the entropy of the answers divided by log M (0 when M = 1)."""
    counts = {a: answers.count(a) / len(answers) for a in answers}
    h = -sum(p * np.log(p) for p in counts.values())
    h = h / np.log(len(counts)) if len(counts) > 1 else 0.0
    return [counts[a] - alpha * h for a in answers]


@pytest.mark.parametrize("texts, official_answers", [
    (["The answer is B, not D.", "D", "golf course.", "golf course", "a"],
     ["D", "D", "golf course", "golf course", "A"]),
    (["B", "b", "(B)", "B."], ["B", "B", "B", "B"]),
    (["E", "e.", "The answer is E", "C"], ["E", "e", "The answer is E", "C"]),  # text keeps case
    (["E", "E.", "E/", "c"], ["E", "E", "E", "C"]),
    (["cat./", "cat", ":cat", "dog"], ["cat", "cat", "cat", "dog"]),
])
def test_official_protocol_rewards_equal_the_official_formula(texts, official_answers):
    keys = vote_keys(texts, choice(), no_answer="text", reader="official")
    got = rewards.compute_rewards("ttrv", keys, alpha=0.75, normalized_entropy=True)
    expected = official_rewards(official_answers)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_readers_are_checked():
    with pytest.raises(ValueError, match="reader"):
        answer_keys(["A"], reader="verl")
