"""DARE in the loop: dare_reward's behaviour (confidence-weighted votes, a bonus for rare
answers, pruning) and the u the loop hands it (ttrv.collect: each response's mean token entropy
over ITS OWN tokens, from the sampler's entropies, per prompt), with --dare-alpha / --dare-tau
reaching it. The sampler is a stand-in returning fixed entropies and lengths; the model is a
random-weight tiny-math (only its tokenizer and device are used)."""

import contextlib

import numpy as np
import pytest
import torch

import data
import rewards
import rollout
import ttrv
import vlm
from harness import tiny_math
from harness.config import Config
from processes import ONE


# ----------------------------------------------------------------------------- dare_reward

def test_a_confident_minority_outweighs_an_unsure_majority():
    r = rewards.dare_reward(["A", "A", "A", "B", "B"], [0.9, 0.9, 0.9, 0.1, 0.1], alpha=0.0)
    assert r[3] == r[4] > r[0] == r[1] == r[2]
    # p(y) = n / u normalised: 3/0.9 against 2/0.1
    w = np.array([3 / (0.9 + 1e-6), 2 / (0.1 + 1e-6)])
    assert r[[0, 3]] == pytest.approx(w / w.sum())


def test_u_of_an_answer_is_the_mean_over_its_rollouts():
    # A's u is the mean of 0.2 and 0.6 = 0.4: the same rewards as two rollouts of u 0.4 each
    r = rewards.dare_reward(["A", "A", "B"], [0.2, 0.6, 0.3])
    assert r == pytest.approx(rewards.dare_reward(["A", "A", "B"], [0.4, 0.4, 0.3]))


def test_the_bonus_goes_to_rare_answers():
    # equal u: without the bonus both answers get p = n / sum n; the bonus (1 - n/M)(1 - u)
    # lifts the rarer answer by more
    keys, u = ["A", "A", "A", "B"], [0.5] * 4
    plain, bonus = (rewards.dare_reward(keys, u, alpha=a) for a in (0.0, 1.0))
    assert (bonus - plain)[3] == pytest.approx(0.75 * 0.5) and (bonus - plain)[0] == pytest.approx(0.25 * 0.5)


def test_pruned_answers_get_zero_and_the_rest_is_recomputed_without_them():
    keys = ["A"] * 6 + ["B"] * 3 + ["C"]
    u = [0.3] * 6 + [0.3] * 3 + [0.99]            # C: one unsure rollout, p(C) below tau
    r = rewards.dare_reward(keys, u, alpha=0.5, tau=0.05)
    assert r[9] == 0.0
    alone = rewards.dare_reward(keys[:9], u[:9], alpha=0.5, tau=0.05)
    assert r[:9] == pytest.approx(alone)          # as if C had never been sampled


def test_the_most_probable_answer_survives_any_tau():
    r = rewards.dare_reward(["A", "B", "C"], [0.1, 0.2, 0.3], alpha=0.0, tau=0.99)
    assert r.tolist() == [1.0, 0.0, 0.0]


# ----------------------------------------------------------------------------- u in the loop

@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return vlm.load(str(tiny_math.build_tiny_math(tmp_path_factory.mktemp("tiny-math"))))


N, T = 3, 4
LENGTHS = [[1, 4, 2], [3, 1, 4]]                          # tokens per response, per prompt


class FixedSampler:
    """Rollouts of fixed lengths whose token entropies are known (0 after a row's end, as
    rollout.sample leaves them)."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.mask = torch.tensor([[int(t < n) for t in range(T)] for row in LENGTHS for n in row])
        self.entropies = torch.rand(2 * N, T, generator=g) * self.mask          # [B*n, T]
        self.ids = torch.randint(10, 300, (2 * N, T), generator=g) * self.mask

    def sample(self, policy, inputs, n, stats=(), **options):
        assert n == N and inputs["input_ids"].shape[0] == 2 and stats == ("entropy",)
        return rollout.Rollouts(self.ids, torch.zeros(2 * N, T), self.mask, {"entropy": self.entropies})

    def expected_u(self):
        return ((self.entropies * self.mask).sum(1) / self.mask.sum(1)).tolist()


def test_collect_hands_dare_each_response_s_mean_entropy_over_its_own_tokens(loaded, monkeypatch):
    model, tokenizer = loaded
    sampler, seen = FixedSampler(), []
    monkeypatch.setattr(rewards, "dare_reward", lambda keys, u, alpha, tau, eps: seen.append(
        (list(u), alpha, tau)) or np.zeros(len(keys)))
    cfg = Config(reward="dare", rollouts=N, beta=0.0, dare_alpha=0.3, dare_tau=0.2)
    batch = [data.Example(f"m{i}", f"What is {i} + 1?", [], str(i + 1), None, None)
             for i in range(2)]
    ttrv.collect(ttrv.Setup(model, None, tokenizer, contextlib.nullcontext(), sampler, ONE),
                 batch, [1.0, 1.0], cfg, np.random.default_rng(0))
    assert len(seen) == 2                                  # once per prompt
    expected = sampler.expected_u()
    for b, (u, alpha, tau) in enumerate(seen):
        assert u == pytest.approx(expected[b * N:(b + 1) * N], abs=1e-7)
        assert (alpha, tau) == (0.3, 0.2)
    assert seen[0][0] != pytest.approx(seen[1][0])         # each prompt its own responses
