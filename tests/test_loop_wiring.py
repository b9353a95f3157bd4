"""Where ttrv.adapt hands one piece to the next: each test fails if that hand-over breaks.

- the old log-probs that reach the loss are the sampler's: the first update of a batch sees
  ratio 1, the second (same rollouts, policy moved) does not;
- the reference is the frozen copy: unchanged bit for bit, KL > 0 once the policy moved;
- every reward setting reaches the rewards and advantages (fixed response texts, the advantages
  written out by hand): --no-answer, --entropy, --alpha under a non-group baseline, and all N
  responses voting while only the first --train-rollouts K are trained;
- DARE receives token entropies on the scale its formula needs: H / ln V, in [0, 1].

The real loop runs on the random tiny Qwen2.5-VL; spies only record what passes through.
"""

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
import torch

import grpo
import rewards
import rollout
import shared_prefix
import ttrv
import vlm
from harness import presets
from harness.run import load_models
from conftest import plain_logits
from harness.config import parse_args

SMALL = ["--num-samples", "2", "--rollouts", "4", "--prompts-per-step", "2", "--epochs", "2",
         "--max-new-tokens", "3", "--lr", "1e-3", "--quiet", "--device", "cpu"]


def config(model_dir, *flags):
    return parse_args(["--model", str(model_dir), *SMALL, *flags])


def spy(monkeypatch, module, name, record):
    """Replace module.name by a wrapper that calls the real one and passes (args, kwargs,
    result) to `record`."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        record(args, kwargs, result)
        return result
    monkeypatch.setattr(module, name, wrapper)


# ------------------------------------------------------------------ old log-probs, reference

@pytest.fixture(scope="module", params=["shared", "plain"])
def random_reward_run(request, tiny_dir):
    """Two batches of two prompts, one AdamW update per prompt, under the random reward (its
    advantages are non-zero whatever the untaught model answers). Records every rollout, every
    update's groups and stats, and the reference's weights before and after."""
    flags = ["--reward", "random", "--rollouts", "8"] + ([] if request.param == "shared" else ["--no-shared-prefix"])
    cfg = config(tiny_dir, *flags)
    s, _ = load_models(cfg, log=lambda *a: None)
    policy, ref_model = s.policy, s.ref_model
    ref_before = {k: v.clone() for k, v in ref_model.state_dict().items()}
    rollouts, updates = [], []
    sampler = shared_prefix if request.param == "shared" else rollout
    with pytest.MonkeyPatch.context() as mp:
        spy(mp, sampler, "sample", lambda a, k, roll: rollouts.append(roll))
        spy(mp, ttrv, "update", lambda a, k, res: updates.append((a[2], res[0][0])))
        history = ttrv.adapt(s, presets.load_dataset("shapes")[:2], cfg)
    return dict(cfg=cfg, policy=policy, ref_model=ref_model, ref_before=ref_before,
                rollouts=rollouts, updates=updates, history=history)


def test_the_old_logprobs_reaching_the_loss_are_the_sampler_s(random_reward_run):
    run = random_reward_run
    n = run["cfg"].rollouts
    assert len(run["rollouts"]) == 2 and len(run["updates"]) == 4       # 2 batches x 2 prompts
    for step, roll in enumerate(run["rollouts"]):
        for j in range(2):                                             # update j of this batch
            groups, stats = run["updates"][2 * step + j]
            group, = groups
            assert torch.equal(group.ids, roll.completion_ids[j * n:(j + 1) * n])
            assert torch.equal(group.old_logp, roll.logprobs[j * n:(j + 1) * n].float())
            assert group.advantages.abs().max() > 0                          # the policy can move
            if j == 0:     # nothing updated since sampling: ratio 1 up to float rounding
                assert abs(stats["ratio"] - 1) < 1e-5 and stats["ratio_max"] < 1 + 1e-4, stats
            else:          # the first update moved the policy; these rollouts are older
                assert abs(stats["ratio"] - 1) > 1e-3 or stats["ratio_max"] > 1 + 1e-3, stats
    assert any(stats["clip_frac"] > 0 for _, stats in run["updates"])     # clipping acts


def test_the_reference_is_the_frozen_copy(random_reward_run):
    run = random_reward_run
    policy, ref_model = run["policy"], run["ref_model"]
    assert ref_model is not policy
    after = ref_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in run["ref_before"].items())   # bit for bit
    assert any(not torch.equal(p, run["ref_before"][k]) for k, p in policy.state_dict().items())
    kls = [stats["kl"] for _, stats in run["updates"]]
    assert kls[0] == 0.0              # first update: the policy is still the reference
    assert all(kl > 0 for kl in kls[1:]), kls


# ------------------------------------------------------------------ reward settings

# Two prompts' six responses. Prompt 0's unparseable texts "cat", "cat", "dog" vote differently
# under each --no-answer policy; the two prompts' vote entropies differ, so alpha acts under
# the batch baseline.
TEXTS = [["A", "cat", "cat", "dog", "B", "A"], ["C", "C", "C", "C", "D", "cat"]]
DEFAULTS = dict(no_answer="own", entropy="raw", alpha=0.75, train_rollouts=None)


def hand_advantages(baseline, no_answer, entropy, alpha, train_rollouts, reward="ttrv"):
    """Eqs. 3-7 and eq. 2 written out for TEXTS: (rewards [2, 6], advantages [2, k])."""
    rows = []
    for texts in TEXTS:
        keys = [t if t in "ABCD" else {"own": ("own", i), "pool": ("pool",),
                                       "text": ("text", t.strip())}[no_answer]
                for i, t in enumerate(texts)]
        p = {key: c / len(keys) for key, c in Counter(keys).items()}            # eq. 3
        h = -sum(q * math.log(q) for q in p.values())                           # eq. 5
        if entropy == "normalized":
            h = h / math.log(len(p)) if len(p) > 1 else 0.0
        rows.append([p[key] - (alpha * h if reward == "ttrv" else 0.0) for key in keys])  # eq. 7
    r = np.array(rows)
    trained = r[:, :train_rollouts or r.shape[1]]
    if baseline == "none":
        return r, trained
    axis = 1 if baseline == "group" else None
    mean, std = trained.mean(axis=axis, keepdims=True), trained.std(axis=axis, keepdims=True)
    return r, np.where(std < 1e-8, 0.0, (trained - mean) / (std + 1e-6))        # eq. 2


@pytest.fixture(scope="module")
def models(tiny_dir):
    cfg = config(tiny_dir)
    return load_models(cfg, log=lambda *a: None)[0]


CASES = {   # each changes one setting from DEFAULTS; the hand-computed advantages must follow
    "no-answer own": ("none", dict(no_answer="own")),
    "no-answer pool": ("none", dict(no_answer="pool")),
    "no-answer text": ("none", dict(no_answer="text")),
    "entropy normalized": ("none", dict(entropy="normalized")),
    "alpha 0, batch": ("batch", dict(alpha=0.0)),
    "alpha 1.5, batch": ("batch", dict(alpha=1.5)),
    "alpha 1.5, none": ("none", dict(alpha=1.5)),
    "6 votes, 3 trained": ("group", dict(train_rollouts=3)),
}


@pytest.mark.parametrize("case", CASES)
def test_each_reward_setting_reaches_the_advantages(case, models, tiny_dir, monkeypatch):
    baseline, change = CASES[case]
    settings = dict(DEFAULTS, **change)
    expected_r, expected_adv = hand_advantages(baseline, **settings)
    if case != "no-answer own":   # the setting matters here: ignoring it would change the result
        _, default_adv = hand_advantages(baseline, **DEFAULTS)
        assert expected_adv.shape != default_adv.shape or not np.allclose(expected_adv, default_adv)
    cfg = dataclasses.replace(config(tiny_dir), rollouts=6, epochs=1, max_new_tokens=1,
                              baseline=baseline, **settings)
    n = cfg.rollouts
    monkeypatch.setattr(vlm, "decode", lambda processor, ids: [   # the responses' texts
        TEXTS[row // n][row % n] for row in range(ids.shape[0])])
    seen = []
    spy(monkeypatch, ttrv, "update", lambda a, k, s: seen.extend(g.advantages for g in a[2]))
    history = ttrv.adapt(models, presets.load_dataset("shapes")[:2], cfg)
    assert history[0]["reward"] == pytest.approx(expected_r.mean(), abs=1e-6)   # all n votes
    got = torch.stack(seen).cpu().numpy()                                        # [2, k]
    assert got.shape == expected_adv.shape
    np.testing.assert_allclose(got, expected_adv, atol=1e-5)


# ------------------------------------------------------------------ DARE's entropy scale

def plain_entropies(policy, inputs, roll, n, temperature):
    """H(pi_T) / ln V at every completion position, by one plain forward with full logits."""
    logp = plain_logits(policy, inputs, roll, n, temperature)                     # [B*n, T, V]
    return torch.distributions.Categorical(logits=logp).entropy() / math.log(logp.shape[-1])


@pytest.mark.parametrize("sampler", [shared_prefix, rollout], ids=["shared", "plain"])
def test_dare_receives_mean_token_entropies_over_ln_v(tiny_dir, monkeypatch, sampler):
    cfg = config(tiny_dir, "--reward", "dare", "--epochs", "1", "--temperature", "1.3")
    s, _ = load_models(cfg, log=lambda *a: None)
    s = dataclasses.replace(s, sampler=sampler)        # the path under test
    n, expected, received = cfg.rollouts, [], []

    def check(args, kwargs, roll):                     # before any update: the sampler's policy
        policy_, inputs = args[:2]
        h = plain_entropies(policy_, inputs, roll, n, cfg.temperature)            # [B*n, T]
        m = roll.mask.float()
        expected.extend(((h * m).sum(1) / m.sum(1)).tolist())                     # [B*n]
    spy(monkeypatch, sampler, "sample", check)
    spy(monkeypatch, rewards, "dare_reward", lambda a, k, r: received.extend(a[1]))
    ttrv.adapt(s, presets.load_dataset("shapes")[:2], cfg)
    assert len(received) == len(expected) == 2 * n
    assert all(0 <= u <= 1 for u in received), received
    np.testing.assert_allclose(received, expected, atol=1e-5)
