"""GRPO-TTA's methods on views whose features are set by hand: what each method predicts from
(zero-shot: the image itself; ZERO: the vote of the confident views; TPT and GRPO-TTA: the image
after adapting), TPT's objective lowering the entropy, GRPO-TTA's rewards and advantages, and
its KL to the reference it is given.

The model is a stand-in with CLIP's two calls (get_image_features, logit_scale): a linear map,
the identity at the start, on "views" that are feature vectors, so each view's class
similarities are exactly what the test writes. Nothing depends on what a model learned."""

import math
from types import SimpleNamespace

import pytest
import torch

import grpo
import grpo_tta
from harness.grpo_tta_config import TTAConfig

C = 4                                   # classes; class c's text embedding is e_c


class LinearClip(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(C, C, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(C))
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))    # scale 10

    def get_image_features(self, pixel_values):
        return SimpleNamespace(pooler_output=self.proj(pixel_values))


def unit(*xs):
    v = torch.tensor(xs, dtype=torch.float32)
    return v / v.norm()


# view 0 (the image) is class 0; three confident views say class 1; four unsure views lean to
# class 2 (close to class 3): over all views class 2 has the most votes, over the confident
# half (views 0-3, the lowest entropies) class 1 has
VIEWS = torch.stack([unit(1, 0, 0, 0)] + [unit(0, 1, 0, 0)] * 3 + [unit(0, 0, 0.8, 0.6)] * 4)
TEXT = torch.eye(C)


def setup(**changes):
    model = LinearClip()
    cfg = TTAConfig(**{**dict(device="cpu", views=len(VIEWS), confident=0.5, steps=2, lr=1e-3,
                              group_size=3), **changes})
    episode = grpo_tta.Episode({"proj.weight": model.proj.weight}, cfg.lr, 0.0)
    model.logit_scale.requires_grad_(False)
    return model, episode, cfg


def test_the_views_are_what_the_test_says():
    logits = 10 * VIEWS @ TEXT.T
    assert sorted(grpo_tta.confident_views(logits, 0.5).tolist()) == [0, 1, 2, 3]
    votes = torch.bincount(logits.argmax(-1), minlength=C).tolist()
    assert votes == [1, 3, 4, 0]


def test_zero_shot_reads_the_image_zero_the_confident_views_and_adapted_methods_the_image():
    model, episode, cfg = setup()
    pred, info = grpo_tta.adapt_image(model, episode, VIEWS, TEXT, cfg, seed=0)
    assert pred["zero-shot"] == 0           # view 0 alone (the mean over views says 1 or 2)
    assert pred["ZERO"] == 1                # the confident views' vote (all views' says 2)
    assert pred["TPT"] == 0 and pred["GRPO-TTA"] == 0   # adapted, then the image itself
    assert set(info) == {"TPT", "GRPO-TTA"}


def test_tpt_lowers_the_entropy_of_the_confident_views_average():
    model, episode, cfg = setup(steps=1)
    kept = VIEWS[:4]

    def h():
        with torch.no_grad():
            return float(grpo_tta.entropy(grpo_tta.marginal_logprobs(
                10 * grpo_tta.cosines(model, kept, TEXT))))
    before = h()
    grpo_tta.tpt_adapt(model, episode.optimizer, kept, TEXT, torch.tensor(10.0), cfg)
    assert h() < before - 1e-6


def test_grpo_tta_advantages_are_eq2_of_alignment_plus_weighted_dispersion():
    kept = VIEWS[:4]
    cos = kept @ TEXT.T                                           # [4 views, C]
    for weight in (0.0, 1.0, 2.5):
        model, episode, cfg = setup(steps=1, dispersion_weight=weight, group_size=4,
                                    sampling="top-k")
        stats = grpo_tta.grpo_tta_adapt(model, episode.optimizer, kept, TEXT, torch.tensor(10.0),
                                        cfg, torch.Generator().manual_seed(0))
        group = torch.tensor(stats["group"])
        mean = cos[:, group].mean(0)
        spread = ((cos[:, group] - mean) ** 2).mean(0).sqrt()     # population std over views
        r = mean - weight * spread
        assert stats["reward"] == pytest.approx(float(r.mean()), abs=1e-6)
        expected = grpo.group_advantages(r[None])[0]
        torch.testing.assert_close(torch.tensor(stats["advantages"]), expected)
        assert abs(float(expected.std(correction=0)) - 1) < 1e-3   # normalised (eq. 2)


def test_grpo_tta_s_kl_is_to_the_reference_it_is_given():
    def first_kl(ref_logp):
        model, episode, cfg = setup(steps=1, beta=0.5)
        return grpo_tta.grpo_tta_adapt(model, episode.optimizer, VIEWS[:4], TEXT,
                                       torch.tensor(10.0), cfg, torch.Generator().manual_seed(0),
                                       ref_logp)["kl"]
    assert first_kl(None) == 0.0                  # pi_ref = pi_old: the first step's KL is 0
    assert first_kl(torch.log_softmax(torch.tensor([0.0, 0.0, 3.0, 3.0]), 0)) > 0.1
