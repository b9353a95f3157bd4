"""Tests for grpo.py: advantages, masks, the loss, the lr schedule (pure tensor maths)."""
import math

import pytest
import torch

from grpo import clip_grad_norm, completion_mask, cosine_lr, group_advantages, grpo_loss, set_lr




# ----------------------------------------------------------------------------- advantages


def test_group_advantages_by_hand():
    # one correct of four: mean 0.25, population std sqrt(0.1875) = 0.4330
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    std = math.sqrt(0.25 * 0.75)
    expected = torch.tensor([[0.75, -0.25, -0.25, -0.25]]) / (std + 1e-6)
    torch.testing.assert_close(adv, expected)
    assert adv[0, 0].item() == pytest.approx(1.7320, abs=1e-4)  # ddof=0; ddof=1 would give 1.5


def test_all_equal_group_gets_exactly_zero_never_nan():
    rewards = torch.tensor([[0.3, 0.3, 0.3], [1.0, 0.0, 1.0], [0.1, 0.1, 0.1]])
    adv = group_advantages(rewards)
    assert torch.equal(adv[0], torch.zeros(3)) and torch.equal(adv[2], torch.zeros(3))
    assert adv[1].abs().min() > 0.5
    assert torch.equal(group_advantages(torch.full((2, 4), 0.7), "batch"), torch.zeros(2, 4))
    assert torch.equal(group_advantages(torch.ones(1, 1)), torch.zeros(1, 1))  # N = 1


def _ttrv_rewards(answers: list[list[str]], alpha: float) -> torch.Tensor:
    """Eq. (7) by hand: vote share of the answer + alpha * (-entropy of the answers), per group."""
    rows = []
    for group in answers:
        p = {a: group.count(a) / len(group) for a in set(group)}
        h = -sum(q * math.log(q) for q in p.values())
        rows.append([p[a] - alpha * h for a in group])
    return torch.tensor(rows, dtype=torch.float64)


def test_diversity_term_cancels_under_group_baseline_only():
    """The reading note: alpha * r2 is constant within a group, so eq. (2) removes it."""
    answers = [["A", "A", "A", "B"], ["A", "B", "C", "D"], ["C", "C", "D", "D"]]
    with_h, without_h = _ttrv_rewards(answers, 0.75), _ttrv_rewards(answers, 0.0)
    assert not torch.allclose(with_h, without_h)
    torch.testing.assert_close(group_advantages(with_h), group_advantages(without_h))
    for baseline in ("batch", "none"):  # entropies differ between inputs: the term acts
        diff = group_advantages(with_h, baseline) - group_advantages(without_h, baseline)
        assert diff.abs().max() > 0.1, baseline


def test_unknown_baseline_names_the_options():
    with pytest.raises(ValueError, match="group.*batch.*none"):
        group_advantages(torch.zeros(1, 2), baseline="mean")


# ----------------------------------------------------------------------------- completion mask


def test_completion_mask_includes_first_eos():
    ids = torch.tensor([[5, 6, 2, 0, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0], [5, 3, 6, 2, 0]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    mask = completion_mask(ids, [2, 3])  # two end tokens: whichever comes first ends the row
    assert mask.dtype == torch.float32
    assert torch.equal(mask, expected.float())


def test_completion_mask_when_pad_is_eos():
    ids = torch.tensor([[5, 2, 2, 2], [5, 6, 7, 2], [2, 2, 2, 2]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).float()
    assert torch.equal(completion_mask(ids, [2]), expected)


# ----------------------------------------------------------------------------- the loss


def _ragged():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]).float()  # lengths 3, 1, 4
    adv = torch.tensor([1.0, -2.0, 0.5])
    return mask, adv


def test_gradient_at_ratio_one_is_the_policy_gradient():
    mask, adv = _ragged()
    logp = torch.randn(3, 4, requires_grad=True)
    loss, _ = grpo_loss(logp, logp.detach(), None, adv, mask, beta=0.0)
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv[:, None] * mask / mask.sum())
    # and the loss value itself is -mean over tokens of A
    assert loss.item() == pytest.approx(-(adv[:, None] * mask).sum().item() / 8)


def _grad_at_ratio(ratio: float, adv: float, **kw):
    logp = torch.zeros(1, 1, requires_grad=True)
    old = torch.full((1, 1), -math.log(ratio))  # exp(logp - old) = ratio
    loss, stats = grpo_loss(logp, old, None, torch.tensor([adv]), torch.ones(1, 1), beta=0.0, **kw)
    loss.backward()
    return loss.item(), logp.grad.item(), stats


@pytest.mark.parametrize("ratio,adv,stopped", [
    (1.5, +1.0, True),    # A > 0, ratio above 1+eps: clipped, no further push up
    (0.5, +1.0, False),   # A > 0, ratio below 1-eps: unclipped side, gradient flows
    (0.5, -1.0, True),    # A < 0, ratio below 1-eps: clipped, no further push down
    (1.5, -1.0, False),   # A < 0, ratio above 1+eps: unclipped side (under the dual clip)
    (1.1, +1.0, False),   # inside the trust region: never clipped
])
def test_clipping_stops_gradient_on_one_side_only(ratio, adv, stopped):
    loss, grad, stats = _grad_at_ratio(ratio, adv, clip_eps=0.2)
    assert (grad == 0.0) == stopped
    assert stats["clip_frac"] == (1.0 if stopped else 0.0)
    if not stopped:
        assert grad == pytest.approx(-adv * ratio)  # d/dlogp of -ratio*A
    expected = -min(ratio * adv, min(max(ratio, 0.8), 1.2) * adv)
    assert loss == pytest.approx(expected)


def test_dual_clip_caps_large_ratio_negative_advantage():
    loss, grad, stats = _grad_at_ratio(5.0, -1.0, dual_clip=3.0)
    assert loss == pytest.approx(3.0) and grad == 0.0 and stats["dual_clip_frac"] == 1.0
    loss, grad, _ = _grad_at_ratio(5.0, -1.0, dual_clip=None)  # without it: unbounded
    assert loss == pytest.approx(5.0) and grad == pytest.approx(5.0)
    loss, grad, stats = _grad_at_ratio(2.0, -1.0, dual_clip=3.0)  # below the cap: untouched
    assert loss == pytest.approx(2.0) and grad == pytest.approx(2.0)
    assert stats["dual_clip_frac"] == 0
    loss, grad, _ = _grad_at_ratio(5.0, +1.0, dual_clip=3.0)  # A > 0: ordinary clip only
    assert loss == pytest.approx(-1.2) and grad == 0.0


def test_k3_kl_to_reference():
    mask, adv = _ragged()
    logp = torch.randn(3, 4)
    _, stats = grpo_loss(logp, logp, logp.clone(), adv, mask)
    assert stats["kl"] == 0.0
    ref = logp + torch.tensor([[0.5, -0.5, 1.0, 9.0], [2.0, 0, 0, 0], [-1.0, 0.3, 0.0, 20.0]])
    d = ref - logp
    kl = torch.exp(d) - d - 1
    assert (kl[mask > 0] >= 0).all()
    expected_kl = (kl.clamp(max=10.0) * mask).sum() / mask.sum()  # 20.0 -> exp(20): clamped to 10
    loss0, _ = grpo_loss(logp, logp, ref, adv, mask, beta=0.0)
    loss, stats = grpo_loss(logp, logp, ref, adv, mask, beta=0.1)
    assert stats["kl"] == pytest.approx(expected_kl.item()) and stats["kl"] > 0
    assert loss.item() == pytest.approx(loss0.item() + 0.1 * expected_kl.item(), rel=1e-5)
    loss_none, _ = grpo_loss(logp, logp, None, adv, mask, beta=0.1)  # no reference: no KL term
    assert loss_none.item() == pytest.approx(loss0.item())


def test_kl_gradient_pulls_toward_reference():
    logp = torch.zeros(1, 1, requires_grad=True)
    ref = torch.full((1, 1), 0.5)
    loss, _ = grpo_loss(logp, logp.detach(), ref, torch.zeros(1), torch.ones(1, 1), beta=1.0)
    loss.backward()
    assert logp.grad.item() < 0  # minimising raises logp toward ref


def test_aggregations_by_hand_on_ragged_mask():
    mask, _ = _ragged()
    adv = torch.tensor([-1.0, -2.0, -3.0])
    logp = torch.zeros(3, 4)
    logp[:, 3] = 50.0  # garbage at a masked position of row 0 and 1 must not leak in
    per_token = -adv[:, None] * torch.ones(3, 4)  # ratio 1 -> loss_t = -A = [1, 2, 3]
    old = logp.clone()
    tok, _ = grpo_loss(logp, old, None, adv, mask, aggregation="token_mean")
    seq, _ = grpo_loss(logp, old, None, adv, mask, aggregation="sequence_mean")
    dr, _ = grpo_loss(logp, old, None, adv, mask, aggregation="dr_grpo")
    dr10, _ = grpo_loss(logp, old, None, adv, mask, aggregation="dr_grpo", max_len=10)
    total = 1 * 3 + 2 * 1 + 3 * 4  # 17
    assert tok.item() == pytest.approx(total / 8)
    assert seq.item() == pytest.approx((1 + 2 + 3) / 3)
    assert dr.item() == pytest.approx(total / (3 * 4))
    assert dr10.item() == pytest.approx(total / (3 * 10))
    assert (per_token * mask).sum().item() == total
    with pytest.raises(ValueError, match="token_mean"):
        grpo_loss(logp, old, None, adv, mask, aggregation="mean")


def test_stats_values():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).float()
    adv = torch.tensor([1.0, -1.0])
    ratio = torch.tensor([[1.0, 1.5, 0.5, 1.1], [0.5, 4.0, 9.0, 9.0]])  # masked 9.0s ignored
    logp = torch.zeros(2, 4)
    _, s = grpo_loss(logp, -ratio.log(), logp, adv, mask)
    # clipped: row 0 token 1 (A>0, 1.5); row 1 token 0 (A<0, 0.5) -> 2 of 6. dual: row 1 token 1.
    assert s["clip_frac"] == pytest.approx(2 / 6)
    assert s["dual_clip_frac"] == pytest.approx(1 / 6)
    assert s["ratio"] == pytest.approx((1.0 + 1.5 + 0.5 + 1.1 + 0.5 + 4.0) / 6)
    assert s["ratio_max"] == pytest.approx(4.0)
    assert s["kl"] == 0.0
    assert all(isinstance(v, float) for v in s.values())


# ----------------------------------------------------------------------------- lr schedule


def test_cosine_lr_without_warmup_short_run():
    # 0.03 * 20 = 0.6 -> 0 warmup steps: step 0 already uses the peak (official behaviour)
    assert cosine_lr(0, 20, 5e-7) == 5e-7
    assert cosine_lr(10, 20, 5e-7) == pytest.approx(2.5e-7)  # midpoint of the cosine
    assert 0 < cosine_lr(19, 20, 5e-7) < 0.01 * 5e-7  # last step: small but not zero
    assert cosine_lr(20, 20, 5e-7) == pytest.approx(0.0, abs=1e-20)


def test_cosine_lr_with_warmup_and_floor():
    lrs = [cosine_lr(s, 100, 1.0, warmup_ratio=0.1, min_lr_ratio=0.1) for s in range(100)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5)  # warmup steps 0..9: s / 10
    assert lrs[10] == 1.0  # end of warmup: peak
    assert lrs[55] == pytest.approx(0.55)  # cosine midpoint: (peak + min) / 2
    assert lrs[99] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert cosine_lr(100, 100, 1.0, 0.1, 0.1) == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_set_lr_writes_every_group_and_clip_returns_norm():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([{"params": [a]}, {"params": [b], "weight_decay": 0.0}], lr=1.0)
    set_lr(opt, 3e-7)
    assert [g["lr"] for g in opt.param_groups] == [3e-7, 3e-7]
    a.grad, b.grad = torch.full((2,), 3.0), torch.full((3,), 0.0)
    a.grad[1] = 4.0
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    assert a.grad.norm().item() == pytest.approx(1.0, rel=1e-4)


def test_huge_masked_log_ratio_gives_finite_gradient():
    """Issue 12 (b): a log-ratio of 100 at a masked position (exp overflows float32) must not
    turn the gradient into NaN; verl clamps log-ratios to [-20, 20] before exp."""
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    logp = torch.tensor([[-1.0, -2.0, 50.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.0, -50.0]])                        # masked: log-ratio 100
    ref = torch.tensor([[-1.0, -2.0, 150.0]])                        # masked: ref - logp = 100
    loss, _ = grpo_loss(logp, old, ref, torch.tensor([1.0]), mask, beta=0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert logp.grad[0, 2] == 0 and logp.grad[0, 0] == pytest.approx(-0.5)  # -A / 2 tokens


def test_lr_steps_once_per_batch_and_the_first_batch_runs_at_the_peak(tiny_dir):
    """verl's schedule: one scheduler step per batch of prompts (2 batches of 2 prompts here);
    per-update stepping would give the first batch lrs 1 and 0.85 of the peak (mean 0.93)."""
    from harness import presets
    from harness.config import parse_args
    from harness.run import load_models
    import ttrv
    cfg = parse_args(["--model", str(tiny_dir), "--num-samples", "4", "--rollouts", "3",
                      "--prompts-per-step", "2", "--epochs", "1", "--max-new-tokens", "2",
                      "--lr", "1e-3", "--quiet", "--device", "cpu"])
    setup, _ = load_models(cfg, log=lambda *a: None)
    history = ttrv.adapt(setup, presets.load_dataset("shapes")[:4], cfg)
    assert [m["updates"] for m in history] == [2, 4]
    assert history[0]["lr"] == 1e-3                                   # int(0.03 * 2) = 0 warmup
    assert history[1]["lr"] == pytest.approx(cosine_lr(1, 2, 1e-3)) == pytest.approx(5e-4)


def test_group_advantages_ddof_one_is_the_unbiased_std_of_the_official_code():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    a0, a1 = group_advantages(r), group_advantages(r, ddof=1)
    assert torch.allclose(a1, a0 * math.sqrt(3 / 4), atol=1e-5)    # |A| smaller by sqrt((N-1)/N)
    assert torch.allclose(a1, (r - r.mean()) / (r.std() + 1e-6))   # torch.std, eps 1e-6
    assert torch.equal(group_advantages(torch.full((1, 4), 0.5), ddof=1), torch.zeros(1, 4))
