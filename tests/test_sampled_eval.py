"""eval.py's sampled evaluation (TTRL's avg@K and maj@K): each example's K samples are rows
b*K + j of one rollout, avg@K is the mean of their scores, maj@K the score of their majority
answer (not the best of K), the dataset figure the mean over examples, and the draws follow
--seed, not torch's global generator. Fixed response texts stand in for the sampler where the
figures are checked; the seed is checked on a random-weight tiny-math model."""

import pytest
import torch

import data
import eval as evaluation
import math_answers
import rollout
import shared_prefix
import vlm
from harness import tiny_math


@pytest.fixture(autouse=True)
def no_wall_clock_timeouts(monkeypatch):
    """Grades and majorities without math-verify's wall-clock timeouts, which a loaded machine
    can run out of (test_vote_keys.py says more)."""
    monkeypatch.setattr(math_answers, "_timeout", lambda: None)
    math_answers._key.cache_clear(), math_answers._equal.cache_clear()
    yield
    math_answers._key.cache_clear(), math_answers._equal.cache_clear()


def math(i, gold):
    return data.Example(f"m{i}", f"What is {gold}?", [], gold, None, None)


def fixed_scores(monkeypatch, batch, texts, k):
    """eval.sample_scores on `batch` with the sampler's rows decoded as `texts` ([B*k])."""
    rows = len(batch) * k
    fake = rollout.Rollouts(torch.arange(rows)[:, None], torch.zeros(rows, 1),
                            torch.ones(rows, 1, dtype=torch.long))
    calls = []
    monkeypatch.setattr(shared_prefix, "sample", lambda m, inputs, n, **kw: calls.append(n) or fake)
    monkeypatch.setattr(vlm, "decode", lambda processor, ids: [texts[int(i)] for i in ids[:, 0]])
    for name, value in (("end_token_ids", [0]), ("pad_token_id", 0), ("placeholder_token_ids", [])):
        monkeypatch.setattr(vlm, name, lambda *a, value=value: value)
    inputs = {"input_ids": torch.zeros(len(batch), 2, dtype=torch.long)}
    out = evaluation.sample_scores(None, None, inputs, batch, k, 0.6, 0.95, 4, None, None, None)
    assert calls == [k]
    return out


def test_each_example_reads_its_own_k_rows(monkeypatch):
    batch = [math(0, "1"), math(1, "2"), math(2, "3")]
    texts = ["\\boxed{1}", "\\boxed{1}", "\\boxed{1}",          # example 0: all right
             "\\boxed{9}", "\\boxed{9}", "\\boxed{9}",          # example 1: all wrong
             "\\boxed{3}", "\\boxed{9}", "\\boxed{3}"]          # example 2: 2 of 3, majority right
    out = fixed_scores(monkeypatch, batch, texts, 3)
    assert [o["avg_at_k"] for o in out] == pytest.approx([1.0, 0.0, 2 / 3])
    assert [o["maj_at_k"] for o in out] == [1.0, 0.0, 1.0]


def test_avg_is_the_mean_of_all_k_and_maj_is_not_the_best_of_k(monkeypatch):
    batch = [math(0, "\\frac{1}{2}")]
    texts = ["\\boxed{3}", "\\boxed{3}", "\\boxed{0.5}", "\\boxed{3}"]   # one right, not first
    out, = fixed_scores(monkeypatch, batch, texts, 4)
    assert out["avg_at_k"] == 0.25 and out["maj_at_k"] == 0.0


def test_maj_counts_equivalent_answers_together_and_never_elects_no_answer(monkeypatch):
    batch = [math(0, "\\frac{1}{2}"), math(1, "7")]
    texts = ["\\boxed{3}", "\\boxed{3}", "\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{\\frac12}",
             "none", "no box", "still none", "\\boxed{7}", "7"]
    out = fixed_scores(monkeypatch, batch, texts, 5)
    assert [o["maj_at_k"] for o in out] == [1.0, 1.0]
    assert [o["avg_at_k"] for o in out] == [0.6, 0.2]


def test_the_dataset_figures_are_means_over_every_example():
    preds = [dict(correct=1, prediction="1", avg_at_k=a, maj_at_k=m)
             for a, m in ((0.0, 0.0), (0.5, 1.0), (1.0, 1.0), (0.25, 0.0))]
    r = evaluation.EvalResult.of(preds)
    assert (r.avg_at_k, r.maj_at_k) == (0.4375, 0.5)
    assert evaluation.EvalResult.of(preds + [dict(correct=0, prediction=None)]).avg_at_k is None


# ----------------------------------------------------------------------------- the seed

@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return vlm.load(str(tiny_math.build_tiny_math(tmp_path_factory.mktemp("tiny-math"))))


def test_the_samples_follow_the_seed_not_the_global_generator(loaded, monkeypatch):
    model, tokenizer = loaded
    drawn, real = [], shared_prefix.sample

    def recorded(*a, **kw):
        drawn.append(real(*a, **kw))
        return drawn[-1]
    monkeypatch.setattr(shared_prefix, "sample", recorded)
    qs = [math(0, "3"), math(1, "4")]

    def samples(seed, global_seed):
        torch.manual_seed(global_seed)
        evaluation.evaluate(model, tokenizer, qs, max_new_tokens=4, samples=3, seed=seed,
                            temperature=1.0, top_p=1.0, progress=False)
        return drawn.pop().completion_ids
    first = samples(seed=0, global_seed=0)
    assert first.shape[0] == 2 * 3
    assert torch.equal(samples(seed=0, global_seed=123), first)       # the global RNG: no effect
    assert not torch.equal(samples(seed=1, global_seed=0), first)     # --seed: another draw


# ----------------------------------------------------------------------------- pass@k

def brute_pass_at_k(n, c, k):
    """pass@k by counting every k-subset of n samples (c right): the definition itself."""
    from itertools import combinations
    subsets = list(combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(4, 1, 2), (5, 2, 3), (6, 0, 2), (6, 6, 1), (7, 3, 7),
                                   (8, 5, 4), (3, 1, 1)])
def test_pass_at_k_is_the_share_of_k_subsets_holding_a_right_sample(n, c, k):
    assert evaluation.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k))


def test_pass_at_k_is_stable_where_the_binomials_overflow_floats():
    from math import comb
    n, c, k = 2000, 3, 500
    exact = 1 - comb(n - c, k) / comb(n, k)       # Python ints: exact, then one division
    assert evaluation.pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


def test_pass_at_one_is_avg_at_k_and_the_dataset_keeps_k_1_2_4_to_k(monkeypatch):
    batch = [math(0, "1"), math(1, "2")]
    texts = ["\\boxed{1}", "\\boxed{9}", "\\boxed{9}", "\\boxed{9}", "\\boxed{9}", "\\boxed{9}",
             "\\boxed{2}", "\\boxed{2}", "\\boxed{2}", "\\boxed{9}", "\\boxed{9}", "\\boxed{9}"]
    out = fixed_scores(monkeypatch, batch, texts, 6)
    assert [(o["samples"], o["samples_correct"]) for o in out] == [(6, 1), (6, 3)]
    r = evaluation.EvalResult.of([dict(correct=1, prediction="1", **o) for o in out])
    assert sorted(r.pass_at_k) == [1, 2, 4, 6]
    assert r.pass_at_k[1] == pytest.approx(r.avg_at_k)
    both = (brute_pass_at_k(6, 1, 2) + brute_pass_at_k(6, 3, 2)) / 2
    assert r.pass_at_k[2] == pytest.approx(both)
    assert r.pass_at_k[6] == 1.0


def test_a_counting_question_has_no_pass_at_k():
    preds = [dict(correct=0.5, prediction=3.0, avg_at_k=0.5, maj_at_k=0.5, samples=4,
                  samples_correct=None)]
    assert evaluation.EvalResult.of(preds).pass_at_k is None
