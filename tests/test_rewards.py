"""Spec for rewards.py: equations (3)-(7) and the compared rewards (answer extraction and the
no-answer policies: tests/test_answers.py)."""
import doctest
import math
from collections import Counter

import numpy as np
import pytest

import rewards
from answers import answer_keys
from rewards import (
    REWARDS, TOKEN_STAT, NoAnswer, compute_rewards, dare_reward, diversity_reward,
    empirical_distribution, entropy_reward, self_certainty_reward,
    entropy, frequency_reward, majority_reward, random_reward, ttrv_reward,
)

PAPER = ["A", "A", "A", "B"]  # the paper's worked example
H_PAPER = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))


def random_answer_lists(count=300, seed=0):
    """A few hundred random answer lists: N in 1..40, answers drawn from up to 8 letters."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n, m = rng.integers(1, 41), rng.integers(1, 9)
        yield [str(letter) for letter in rng.choice(list("ABCDEFGH")[:m], size=n)]


# ----------------------------------------------------------------------------- docstrings

def test_docstring_examples_run():
    result = doctest.testmod(rewards)
    assert result.attempted > 10 and result.failed == 0


def test_module_does_not_import_torch():
    source = open(rewards.__file__).read()
    assert "import torch" not in source and "from torch" not in source


# ----------------------------------------------------------------------------- the paper's example

def test_eq3_distribution_of_worked_example():
    assert empirical_distribution(PAPER) == {"A": 0.75, "B": 0.25}


def test_eq4_frequency_reward_of_worked_example():
    r1 = frequency_reward(PAPER)
    assert r1.dtype == np.float64 and r1.shape == (4,)
    assert r1.tolist() == [0.75, 0.75, 0.75, 0.25]


def test_eq5_entropy_of_worked_example():
    assert entropy({"A": 0.75, "B": 0.25}) == pytest.approx(0.562335, abs=1e-6)


def test_eq6_diversity_reward_is_minus_entropy():
    assert diversity_reward(PAPER) == pytest.approx(-0.562335, abs=1e-6)


def test_eq7_ttrv_reward_of_worked_example():
    expected = np.array([0.75, 0.75, 0.75, 0.25]) - 0.75 * H_PAPER
    np.testing.assert_allclose(ttrv_reward(PAPER, alpha=0.75), expected, rtol=0, atol=1e-12)


def test_eq7_default_alpha_is_paper_value():
    np.testing.assert_allclose(ttrv_reward(PAPER), ttrv_reward(PAPER, alpha=0.75))


def test_normalized_entropy_divides_by_log_of_answer_count():
    assert entropy({"A": 0.75, "B": 0.25}, normalized=True) == pytest.approx(H_PAPER / math.log(2))


def test_normalized_entropy_is_zero_for_single_answer():
    assert entropy({"A": 1.0}, normalized=True) == 0.0


def test_ttrv_reward_with_normalized_entropy():
    expected = frequency_reward(PAPER) - 0.75 * H_PAPER / math.log(2)
    np.testing.assert_allclose(ttrv_reward(PAPER, normalized=True), expected)


# ----------------------------------------------------------------------------- hand computations

def test_three_way_split_by_hand():
    keys = ["A", "B", "B", "C", "C", "C"]
    assert empirical_distribution(keys) == pytest.approx({"A": 1 / 6, "B": 2 / 6, "C": 3 / 6})
    np.testing.assert_allclose(frequency_reward(keys), [1 / 6, 1 / 3, 1 / 3, 0.5, 0.5, 0.5])
    h = -(1 / 6 * math.log(1 / 6) + 1 / 3 * math.log(1 / 3) + 1 / 2 * math.log(1 / 2))
    assert entropy(empirical_distribution(keys)) == pytest.approx(h)
    np.testing.assert_allclose(ttrv_reward(keys, alpha=0.5), frequency_reward(keys) - 0.5 * h)


def test_distribution_keeps_order_of_first_appearance():
    assert list(empirical_distribution(["C", "A", "C", "B"])) == ["C", "A", "B"]


def test_numeric_answers_vote_like_letters():
    assert frequency_reward([3.0, 3.0, 4.0, 3.0]).tolist() == [0.75, 0.75, 0.25, 0.75]


def test_empty_group_is_an_error():
    with pytest.raises(ValueError):
        empirical_distribution([])


# ----------------------------------------------------------------------------- properties

def test_frequency_rewards_lie_in_unit_interval():
    for keys in random_answer_lists():
        r1 = frequency_reward(keys)
        assert np.all(r1 > 0) and np.all(r1 <= 1)


def test_distribution_sums_to_one():
    for keys in random_answer_lists():
        assert sum(empirical_distribution(keys).values()) == pytest.approx(1.0)


def test_frequency_reward_averages_to_sum_of_squared_probabilities():
    for keys in random_answer_lists():
        p = np.array(list(empirical_distribution(keys).values()))
        assert frequency_reward(keys).mean() == pytest.approx(np.sum(p ** 2))


def test_entropy_is_zero_for_a_single_answer():
    for n in (1, 2, 32):
        assert entropy(empirical_distribution(["B"] * n)) == 0.0


@pytest.mark.parametrize("m", [2, 3, 4, 7, 26])
def test_entropy_is_log_m_for_uniform_distribution(m):
    keys = [chr(ord("A") + i) for i in range(m)] * 3
    assert entropy(empirical_distribution(keys)) == pytest.approx(math.log(m))
    assert entropy(empirical_distribution(keys), normalized=True) == pytest.approx(1.0)


def test_entropy_never_exceeds_log_m():
    for keys in random_answer_lists():
        dist = empirical_distribution(keys)
        assert 0.0 <= entropy(dist) <= math.log(len(dist)) + 1e-12


def test_normalized_entropy_lies_in_unit_interval():
    for keys in random_answer_lists():
        assert 0.0 <= entropy(empirical_distribution(keys), normalized=True) <= 1.0 + 1e-12


def test_eq7_equals_eq4_when_alpha_is_zero():
    for keys in random_answer_lists():
        np.testing.assert_array_equal(ttrv_reward(keys, alpha=0.0), frequency_reward(keys))


def test_diversity_term_is_the_same_shift_for_every_response():
    for keys in random_answer_lists(count=50):
        shift = ttrv_reward(keys) - frequency_reward(keys)
        np.testing.assert_allclose(shift, 0.75 * diversity_reward(keys))


# ----------------------------------------------------------------------------- majority (TTRL)

def test_majority_rewards_the_most_common_answer():
    assert majority_reward(PAPER).tolist() == [1.0, 1.0, 1.0, 0.0]


def test_majority_tie_goes_to_the_answer_seen_first():
    assert majority_reward(["B", "A", "A", "B"]).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert majority_reward(["A", "B", "B", "A"]).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_majority_never_goes_to_an_own_unanswered_response():
    keys = answer_keys([None, "C", "D"], no_answer="own")
    assert majority_reward(keys).tolist() == [0.0, 1.0, 0.0]


def test_majority_is_all_zero_when_no_response_answered_under_own():
    assert majority_reward(answer_keys([None, None, None])).tolist() == [0.0, 0.0, 0.0]


def test_majority_can_go_to_pooled_unanswered_responses():
    keys = answer_keys([None, None, "A"], no_answer="pool")
    assert majority_reward(keys).tolist() == [1.0, 1.0, 0.0]


# ----------------------------------------------------------------------------- random (Table 5)

def test_random_reward_is_reproducible_with_the_same_seed():
    a = random_reward(PAPER * 8, np.random.default_rng(7))
    b = random_reward(PAPER * 8, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_random_reward_ignores_the_answers():
    a = random_reward(["A"] * 32, np.random.default_rng(3))
    b = random_reward(list("ABCD") * 8, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def test_random_reward_is_a_fair_coin_per_response():
    r = random_reward(["A"] * 20000, np.random.default_rng(0))
    assert set(np.unique(r).tolist()) == {0.0, 1.0}
    assert abs(r.mean() - 0.5) < 0.02


# ----------------------------------------------------------------------------- DARE

def test_dare_matches_hand_computation():
    # u(A) = mean(0.2, 0.4, 0.3) = 0.3, u(B) = 0.8;  w = n/u: A 10, B 1.25;  p: A 8/9, B 1/9
    # b(A) = (1 - 3/4)(1 - 0.3) = 0.175, b(B) = (1 - 1/4)(1 - 0.8) = 0.15
    r = dare_reward(PAPER, [0.2, 0.4, 0.3, 0.8], alpha=0.5, tau=0.05, eps=0.0)
    np.testing.assert_allclose(r, [8 / 9 + 0.0875] * 3 + [1 / 9 + 0.075])


def test_dare_eps_keeps_zero_entropy_finite():
    r = dare_reward(["A", "B"], [0.0, 0.5])
    assert np.all(np.isfinite(r)) and r[0] > r[1]


def test_dare_pruning_zeroes_rare_answers_and_recomputes_the_rest():
    # tau = 0.2 drops B (p = 1/9); then A alone: p = 1, M = 3, b = (1 - 3/3)(1 - 0.3) = 0
    r = dare_reward(PAPER, [0.2, 0.4, 0.3, 0.8], alpha=0.5, tau=0.2, eps=0.0)
    np.testing.assert_allclose(r, [1.0, 1.0, 1.0, 0.0])


def test_dare_never_prunes_the_most_probable_answer():
    # p: A 1/2, B 1/4, C 1/4, all below tau = 0.9; A survives alone: p = 1, b = 0
    r = dare_reward(["A", "A", "B", "C"], [0.5] * 4, alpha=0.5, tau=0.9, eps=0.0)
    assert r.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_dare_keeps_all_answers_tied_for_most_probable():
    # p = 1/4 each; b = (1 - 1/4)(1 - 0.5) = 0.375; reward 0.25 + 0.5 * 0.375
    r = dare_reward(list("ABCD"), [0.5] * 4, alpha=0.5, tau=0.9, eps=0.0)
    np.testing.assert_allclose(r, [0.4375] * 4)


def test_dare_needs_one_entropy_per_response():
    with pytest.raises(ValueError):
        dare_reward(PAPER, [0.1, 0.2])


def dare_bonus(keys, u):
    """b(y) of each rollout: reward at alpha = 1 minus reward at alpha = 0 (p does not depend on
    alpha), nothing pruned (tau = 0)."""
    return dare_reward(keys, u, alpha=1.0, tau=0.0) - dare_reward(keys, u, alpha=0.0, tau=0.0)


def test_dare_bonus_is_never_negative_and_favours_rarer_answers_for_u_in_unit_interval():
    """The scale the loop feeds (token entropy / ln V, in [0, 1]): b >= 0, and at equal u an
    answer given by fewer rollouts gets a larger bonus (strictly, unless u = 1)."""
    rng = np.random.default_rng(0)
    for keys in random_answer_lists(200):
        u = rng.choice([0.0, 1.0, *rng.random(6)], size=len(keys))     # ends of [0, 1] included
        assert (dare_bonus(keys, u) >= -1e-12).all()
        same = rng.random()                                             # one u for every rollout
        bonus = dict(zip(keys, dare_bonus(keys, [same] * len(keys))))
        count = Counter(keys)
        for a in count:
            for b in count:
                if count[a] < count[b]:
                    assert bonus[a] > bonus[b], (keys, a, b)
    assert np.allclose(dare_bonus(["A", "B"], [1.0, 1.0]), 0.0)        # u = 1: no bonus at all


# ----------------------------------------------------------------------------- registry

def test_registry_has_the_documented_names():
    assert set(REWARDS) == {"ttrv", "frequency", "diversity", "majority", "random", "dare",
                            "self-certainty", "entropy"}


def test_compute_rewards_ttrv_is_eq7():
    r = compute_rewards("ttrv", PAPER, alpha=0.5, normalized_entropy=True)
    np.testing.assert_allclose(r, ttrv_reward(PAPER, alpha=0.5, normalized=True))


def test_compute_rewards_frequency_is_r1_alone():
    np.testing.assert_array_equal(compute_rewards("frequency", PAPER, alpha=0.75),
                                  frequency_reward(PAPER))


def test_compute_rewards_diversity_is_alpha_r2_for_every_response():
    np.testing.assert_allclose(compute_rewards("diversity", PAPER), [-0.75 * H_PAPER] * 4)


def test_compute_rewards_majority_random_and_dare_delegate():
    np.testing.assert_array_equal(compute_rewards("majority", PAPER), majority_reward(PAPER))
    np.testing.assert_array_equal(compute_rewards("random", PAPER, rng=np.random.default_rng(1)),
                                  random_reward(PAPER, np.random.default_rng(1)))
    ent = [0.2, 0.4, 0.3, 0.8]
    np.testing.assert_allclose(compute_rewards("dare", PAPER, token_stat=ent, dare_eps=0.0),
                               dare_reward(PAPER, ent, eps=0.0))


@pytest.mark.parametrize("name", ["ttrv", "frequency", "diversity", "majority", "random", "dare",
                                  "self-certainty", "entropy"])
def test_compute_rewards_returns_float64_of_shape_n(name):
    r = compute_rewards(name, PAPER, token_stat=[0.1] * 4, rng=np.random.default_rng(0))
    assert r.dtype == np.float64 and r.shape == (4,)


def test_compute_rewards_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="known rewards are: ttrv, frequency, diversity"):
        compute_rewards("voting", PAPER)


@pytest.mark.parametrize("name", ["dare", "self-certainty", "entropy"])
def test_the_token_stat_rewards_need_one_mean_statistic_per_response(name):
    with pytest.raises(ValueError, match="needs token_stat"):
        compute_rewards(name, PAPER)
    with pytest.raises(ValueError, match=r"per response \(4\)"):
        compute_rewards(name, PAPER, token_stat=[0.1] * 3)


def test_each_token_stat_reward_names_a_statistic_the_samplers_record():
    import rollout
    assert set(TOKEN_STAT) == {"dare", "self-certainty", "entropy"}
    assert set(TOKEN_STAT.values()) <= set(rollout.TOKEN_STATS)
    assert (TOKEN_STAT["self-certainty"], TOKEN_STAT["entropy"]) == ("self_certainty", "entropy")


# ----------------------------------------------------------------------------- INTUITOR, RENT

def test_self_certainty_rewards_the_more_certain_response():
    # means over each response's tokens of KL(U || pi): the peaked response gets the larger reward
    r = self_certainty_reward([2.5, 0.1, 1.0])
    assert r.dtype == np.float64 and r.argmax() == 0 and r.argmin() == 1
    got = compute_rewards("self-certainty", PAPER, token_stat=[2.5, 0.1, 1.0, 0])
    np.testing.assert_array_equal(got, [2.5, 0.1, 1.0, 0.0])


def test_entropy_reward_is_minus_the_mean_entropy_so_lower_entropy_wins():
    r = entropy_reward([0.9, 0.1, 0.5])
    assert r.dtype == np.float64 and r.argmax() == 1 and r.argmin() == 0
    np.testing.assert_array_equal(r, [-0.9, -0.1, -0.5])
    assert (compute_rewards("entropy", PAPER, token_stat=[0.9, 0.1, 0.5, 0.0]) <= 0).all()


def test_self_certainty_and_entropy_agree_on_which_token_is_confident():
    # one token each, V = 8: KL(U || p) = -ln V - mean log p; H / ln V; the peaked p wins both
    V = 8
    peaked, flat = np.array([0.93] + [0.01] * 7), np.full(V, 1 / V)
    kl = [float(-np.log(V) - np.log(p).mean()) for p in (peaked, flat)]
    h = [float(-(p * np.log(p)).sum() / np.log(V)) for p in (peaked, flat)]
    assert kl[1] == pytest.approx(0.0) and h[1] == pytest.approx(1.0)
    assert self_certainty_reward(kl)[0] > self_certainty_reward(kl)[1]
    assert entropy_reward(h)[0] > entropy_reward(h)[1]


def test_compute_rewards_random_needs_rng():
    with pytest.raises(ValueError, match="rng"):
        compute_rewards("random", PAPER)
