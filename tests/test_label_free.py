"""INTUITOR's self-certainty and RENT's entropy rewards in the loop, and the harness's diagnostics.

- ttrv.collect asks the sampler for the statistic the reward reads (rewards.TOKEN_STAT) and
  hands each response's mean over ITS OWN tokens to the reward; the rewards that reach the
  advantages are +mean (self-certainty) and -mean (entropy): a flipped sign fails here;
- collect's `seen` (the side channel) carries every rollout's text, reward and tokens;
- harness/diagnostics.py: label accuracy, reward accuracy, token overlap on made-up groups, and
  the collapse warning on made-up metric histories;
- `--reward self-certainty` / `--reward entropy` end to end on the tiny models (short runs),
  with the diagnostics in metrics.jsonl, the step line and results.json.
The sampler is a stand-in returning fixed statistics and lengths; the model is a random-weight
tiny-math (only its tokenizer and device are used)."""

import contextlib
import json
import math
import shutil

import numpy as np
import pytest
import torch

import data
import grpo
import rewards
import rollout
import ttrv
import vlm
from harness import cli, diagnostics, report, tiny, tiny_math
from harness.config import Config
from processes import ONE
from conftest import plain_logits

N, T = 3, 4
LENGTHS = [[1, 4, 2], [3, 1, 4]]                          # tokens per response, per prompt


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return vlm.load(str(tiny_math.build_tiny_math(tmp_path_factory.mktemp("tiny-math"))))


class FixedSampler:
    """Rollouts of fixed lengths whose per-token statistic (any name) is known, 0 past the end."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.mask = torch.tensor([[int(t < n) for t in range(T)] for row in LENGTHS for n in row])
        self.values = torch.rand(2 * N, T, generator=g) * 3 * self.mask        # [B*n, T]
        self.ids = torch.randint(10, 300, (2 * N, T), generator=g) * self.mask
        self.asked = []

    def sample(self, policy, inputs, n, stats=(), **options):
        self.asked.append(stats)
        return rollout.Rollouts(self.ids, torch.zeros(2 * N, T), self.mask,
                                {name: self.values for name in stats})

    def means(self):
        return ((self.values * self.mask).sum(1) / self.mask.sum(1)).tolist()


def collect(loaded, reward, monkeypatch):
    model, tokenizer = loaded
    sampler, seen = FixedSampler(), []
    real = grpo.group_advantages
    monkeypatch.setattr(grpo, "group_advantages", lambda r, **kw: seen.append(r.clone()) or real(r, **kw))
    batch = [data.Example(f"m{i}", f"What is {i} + 1?", [], str(i + 1), None, None) for i in range(2)]
    out = ttrv.collect(ttrv.Setup(model, None, tokenizer, contextlib.nullcontext(), sampler, ONE),
                       batch, [1.0, 1.0], Config(reward=reward, rollouts=N, beta=0.0),
                       np.random.default_rng(0))
    return sampler, seen[0], out


@pytest.mark.parametrize("reward, stat, sign", [("self-certainty", "self_certainty", 1.0),
                                                ("entropy", "entropy", -1.0)])
def test_collect_rewards_each_response_by_its_own_mean_statistic_with_the_paper_s_sign(
        loaded, monkeypatch, reward, stat, sign):
    sampler, r, _ = collect(loaded, reward, monkeypatch)
    assert sampler.asked == [(stat,)]                      # computed once, by the sampler
    expected = sign * np.array(sampler.means()).reshape(2, N)
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-6)
    # the most certain (self-certainty) / least uncertain (entropy) response gets the top reward
    assert (r.argmax(1) == torch.tensor(expected).argmax(1)).all()


def test_the_other_rewards_ask_the_sampler_for_nothing(loaded, monkeypatch):
    sampler, _, _ = collect(loaded, "majority", monkeypatch)
    assert sampler.asked == [()]


def test_seen_carries_every_rollout_for_the_harness(loaded, monkeypatch):
    sampler, r, (groups, figures, seen) = collect(loaded, "entropy", monkeypatch)
    assert [e.id for e in seen["examples"]] == ["m0", "m1"] and seen["weights"] == [1.0, 1.0]
    assert len(seen["texts"]) == 2 * N and torch.equal(seen["rewards"], r)
    assert torch.equal(seen["ids"], sampler.ids) and torch.equal(seen["mask"], sampler.mask.float())
    assert len(groups) == len(figures) == 2


# ----------------------------------------------------------------------------- diagnostics

def question(answer="7"):
    return data.Example("q", "What is 3 + 4?", [], answer, None, None)


def seen_of(texts, rewards_, ids, example=None, weight=1.0):
    n = len(texts)
    return dict(examples=[example or data.strip_labels(question())], weights=[weight],
                texts=texts, rewards=torch.tensor([rewards_]),
                ids=torch.tensor(ids), mask=torch.ones(n, len(ids[0])))


def test_label_accuracy_is_whether_the_majority_answer_is_right():
    texts = [r"\boxed{7}", r"\boxed{7}", r"\boxed{8}"]
    hp = Config(reward="majority", rollouts=3)
    ids = [[1, 2], [1, 2], [3, 4]]
    m = diagnostics.step(seen_of(texts, [1.0, 1.0, 0.0], ids), {"q": question("7")}, hp, ONE)
    assert m["label_accuracy"] == 1.0 and m["reward_accuracy"] == 1.0
    m = diagnostics.step(seen_of(texts, [1.0, 1.0, 0.0], ids), {"q": question("8")}, hp, ONE)
    assert m["label_accuracy"] == 0.0 and m["reward_accuracy"] == 0.0   # every reward wrong
    assert m["token_overlap"] == pytest.approx((1 + 0 + 0) / 3)


def test_reward_accuracy_of_a_graded_reward_counts_above_the_group_mean_as_rewarded():
    # TTRV's rewards: the two 7s above the mean, the 8 below; gold 8: all three disagree
    texts = [r"\boxed{7}", r"\boxed{7}", r"\boxed{8}"]
    hp = Config(reward="ttrv", rollouts=3)
    r = rewards.ttrv_reward(["7", "7", "8"]).tolist()
    ids = [[1], [1], [1]]
    assert diagnostics.step(seen_of(texts, r, ids), {"q": question("7")}, hp, ONE)[
        "reward_accuracy"] == 1.0
    assert diagnostics.step(seen_of(texts, r, ids), {"q": question("8")}, hp, ONE)[
        "reward_accuracy"] == 0.0


def test_without_labels_only_the_token_overlap_is_recorded_and_stand_ins_count_nothing():
    texts, ids = ["a", "b"], [[1, 2], [2, 3]]
    m = diagnostics.step(seen_of(texts, [0.0, 1.0], ids), {}, Config(rollouts=2), ONE)
    assert m == {"token_overlap": pytest.approx(1 / 3)}
    m = diagnostics.step(seen_of(texts, [0.0, 1.0], ids, weight=0.0), {}, Config(rollouts=2), ONE)
    assert math.isnan(m["token_overlap"])


def test_token_overlap_is_the_mean_pairwise_jaccard_of_token_sets():
    assert diagnostics.token_overlap([{1, 2}, {1, 2}]) == 1.0
    assert diagnostics.token_overlap([{1, 2}, {3, 4}]) == 0.0
    assert diagnostics.token_overlap([{1, 2, 3}, {2, 3, 4}, {9}]) == pytest.approx((0.5 + 0 + 0) / 3)


# ----------------------------------------------------------------------------- collapse

def history(shares, entropies, lengths, labels=None):
    return [dict(step=i + 1, majority_share=s, answer_entropy=h, response_tokens=n,
                 **({} if labels is None else dict(label_accuracy=labels[i])))
            for i, (s, h, n) in enumerate(zip(shares, entropies, lengths))]


SHARES, ENTROPIES = [0.5, 0.6, 0.8, 0.9, 1.0, 1.0, 1.0, 1.0], [1.1, 0.9, 0.5, 0.3, 0, 0, 0, 0]


def test_a_vote_gone_to_one_answer_without_a_rise_in_label_accuracy_is_a_collapse():
    flat = [0.5] * 8
    warning = diagnostics.collapse_warning(history(SHARES, ENTROPIES, [20] * 8, flat))
    assert warning.startswith("collapse warning: the vote went to one answer")
    assert "label accuracy did not rise (0.50 -> 0.50)" in warning


def test_a_vote_gone_to_one_answer_while_label_accuracy_rises_is_not():
    rising = [0.25, 0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75]
    assert diagnostics.collapse_warning(history(SHARES, ENTROPIES, [20] * 8, rising)) is None


def test_a_vote_still_split_is_not_a_collapse():
    split = [0.5, 0.6, 0.7, 0.7, 0.8, 0.8, 0.9, 0.9]
    assert diagnostics.collapse_warning(history(split, [1.0] * 8, [20] * 8, [0.5] * 8)) is None


def test_responses_shrunk_to_a_few_tokens_are_a_collapse():
    shrink = [40, 30, 20, 10, 6, 4, 3, 3]
    warning = diagnostics.collapse_warning(history([0.5] * 8, [1.0] * 8, shrink, [0.5] * 8))
    assert "responses shrank to 3.0 tokens (from 35.0)" in warning
    # short from the start (a letter answer): nothing shrank
    assert diagnostics.collapse_warning(history([0.5] * 8, [1.0] * 8, [3] * 8, [0.5] * 8)) is None


def test_without_labels_the_vote_alone_decides_and_the_warning_says_so():
    warning = diagnostics.collapse_warning(history(SHARES, ENTROPIES, [20] * 8))
    assert "no labels" in warning
    assert diagnostics.collapse_warning(history(SHARES[:1], ENTROPIES[:1], [20])) is None  # 1 step


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def cache(voter_dir, tmp_path_factory):
    """A $TTRV_CACHE where `--model tiny` is the voter (conftest) and `--model tiny-math` a
    random-weight tiny-math: the names' whole path, no teaching."""
    cache = tmp_path_factory.mktemp("cache-label-free")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny, "build_taught", lambda tmp, name, log=None: shutil.copytree(
            voter_dir, tmp, dirs_exist_ok=True))
        patch.setattr(tiny_math, "build_taught", lambda tmp, seed, log=None:
                      tiny_math.build_tiny_math(tmp))
        tiny.tiny_model_path("tiny", cache_dir=cache, log=lambda *a: None)
        tiny_math.tiny_math_path(cache, log=lambda *a: None)
    return cache


SMALL = ["--num-samples", "2", "--rollouts", "3", "--prompts-per-step", "2", "--epochs", "2",
         "--eval-limit", "3", "--max-new-tokens", "4", "--no-save-model", "--device", "cpu"]


@pytest.mark.parametrize("model", ["tiny", "tiny-math"])
@pytest.mark.parametrize("reward", ["self-certainty", "entropy"])
def test_the_new_rewards_run_end_to_end_and_the_diagnostics_are_written(
        model, reward, cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TTRV_CACHE", str(cache))
    out = tmp_path / "run"
    assert cli.main(["--model", model, "--reward", reward, *SMALL, "--output-dir", str(out)]) == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 2
    for m in steps:
        for key in ("label_accuracy", "reward_accuracy", "token_overlap", "majority_share"):
            assert 0 <= m[key] <= 1, (key, m[key])
        assert m["response_tokens"] > 0
    printed = capsys.readouterr().out
    assert all(label in printed for label in ("  label ", "  r-acc ", "  overlap "))
    trajectory = json.loads((out / "results.json").read_text())["trajectory"]
    for key in report.DIAGNOSTICS:
        assert trajectory[key] == [[m["step"], m[key]] for m in steps]
    assert "collapse_warning" in trajectory


# ----------------------------------------------------------------------------- both samplers

@pytest.mark.parametrize("sampler", ["shared_prefix", "rollout"])
@pytest.mark.parametrize("reward", ["self-certainty", "entropy"])
def test_each_sampler_hands_the_reward_the_mean_statistic_of_pi_t(tiny_dir, monkeypatch, sampler,
                                                                 reward):
    import dataclasses
    import importlib
    from harness import presets
    from harness.config import parse_args
    from harness.run import load_models
    module = importlib.import_module(sampler)
    cfg = parse_args(["--model", str(tiny_dir), "--reward", reward, "--num-samples", "2",
                      "--rollouts", "4", "--prompts-per-step", "2", "--epochs", "1",
                      "--max-new-tokens", "3", "--temperature", "1.3", "--quiet", "--device", "cpu"])
    s, _ = load_models(cfg, log=lambda *a: None)
    s = dataclasses.replace(s, sampler=module)
    expected, received, real_sample = [], [], module.sample

    def sample(policy, inputs, n, **kw):
        roll = real_sample(policy, inputs, n, **kw)
        logp, m = plain_logits(policy, inputs, roll, n, cfg.temperature), roll.mask.float()
        V = logp.shape[-1]
        per_token = (-math.log(V) - logp.mean(-1) if reward == "self-certainty"
                     else -(logp.exp() * logp).sum(-1) / math.log(V))
        expected.extend(((per_token * m).sum(1) / m.sum(1)).tolist())
        return roll
    monkeypatch.setattr(module, "sample", sample)
    real_score = rewards.compute_rewards
    monkeypatch.setattr(rewards, "compute_rewards", lambda name, keys, **kw: received.extend(
        kw["token_stat"]) or real_score(name, keys, **kw))
    ttrv.adapt(s, presets.load_dataset("shapes")[:2], cfg)
    assert len(received) == len(expected) == 2 * cfg.rollouts
    np.testing.assert_allclose(received, expected, atol=1e-4)


@pytest.mark.parametrize("reward", ["self-certainty", "entropy"])
def test_a_lora_text_lm_adapts_under_the_new_rewards(tmp_path, reward):
    from harness import presets
    from harness.config import parse_args
    from harness.run import load_models
    path = tiny_math.build_tiny_math(tmp_path / "m")
    cfg = parse_args(["--model", str(path), "--reward", reward, "--rollouts", "4", "--lora-rank",
                      "4", "--prompts-per-step", "2", "--epochs", "1", "--max-new-tokens", "4",
                      "--lr", "1e-3", "--quiet", "--device", "cpu"])
    s, _ = load_models(cfg, log=lambda *a: None)
    history = ttrv.adapt(s, presets.load_dataset("tiny-math")[:2], cfg)
    assert len(history) == 1 and np.isfinite(history[0]["loss"]) and history[0]["adv_abs"] > 0
