"""Every sampler draws from the distribution the loss scores: softmax(logits / T) cut to the top-p
nucleus (shared_prefix.sample, the default path; rollout.sample, the plain --no-shared-prefix
path; eval.generate, transformers' generate as evaluation runs it).

One prompt, one new token, a few thousand draws from the random tiny Qwen2.5-VL, whose logits at
the prompt's last position are computed here with one plain forward. The empirical distribution
of the draws must be within total variation `eps` of the expected one, where eps comes from the
Bretagnolle-Huber-Carol inequality for a multinomial over k bins,
    P(TV(empirical, p) >= eps) <= 2^k exp(-2 N eps^2),
set to DELTA = 1e-6: a correct sampler fails with probability below 1e-6 whatever the seed
(the seeds are fixed anyway, so the test is deterministic). Bins: the TOP most likely tokens one
by one, the rest of the nucleus, and everything outside it (which must get no draw at all).
"""

import math

import pytest
import torch
from PIL import Image

import grpo
import eval as evaluation
import rollout
import shared_prefix
import vlm

T, TOP_P = 0.25, 0.7      # a sharp tempered distribution: its nucleus is far from the untempered one
DRAWS, TOP, DELTA = 2000, 5, 1e-6
EOS, PAD = 2, 0           # tiny.py: <|im_end|> and <|endoftext|>


@pytest.fixture(scope="module")
def one_prompt(tiny_dir):
    model, processor = vlm.load(str(tiny_dir))
    model.eval()
    inputs = vlm.prompt_inputs(processor, [Image.new("RGB", (56, 56), (200, 30, 30))], ["Shape?"])
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1].float()                    # [V]
    return model, inputs, logits


def nucleus(logits, temperature, top_p):
    """softmax(logits / T) restricted to the smallest most-likely set of mass >= top_p,
    renormalised [V]; and the smallest distance of any token's preceding mass to top_p."""
    p = torch.softmax(logits.double() / temperature, -1)
    sorted_p, order = p.sort(descending=True)
    before = sorted_p.cumsum(0) - sorted_p                  # mass of the more likely tokens
    keep = before < top_p
    q = torch.zeros_like(p)
    q[order[keep]] = sorted_p[keep]
    return q / q.sum(), float((before - top_p).abs().min())


def binned(dist, q):
    """[V] -> [TOP + 2]: the TOP most likely tokens of q, the rest of q's nucleus, the outside."""
    top = q.argsort(descending=True)[:TOP]
    inside = q > 0
    rest = dist[inside].sum() - dist[top].sum()
    return torch.cat([dist[top], rest[None], dist[~inside].sum()[None]])


def tv_bound(bins, n):
    """eps with 2^bins exp(-2 n eps^2) = DELTA."""
    return math.sqrt((bins * math.log(2) + math.log(1 / DELTA)) / (2 * n))


def draw(sampler, model, inputs):
    kw = dict(temperature=T, top_p=TOP_P, max_new_tokens=1, eos_token_ids=[EOS], pad_token_id=PAD)
    if sampler in ("shared", "plain"):
        module = shared_prefix if sampler == "shared" else rollout
        return module.sample(model, inputs, DRAWS, **kw, generator=torch.Generator().manual_seed(0)
                             ).completion_ids[:, 0]                                # [DRAWS]
    torch.manual_seed(0)                                    # generate draws from torch's generator
    return evaluation.generate(model, vlm.repeat_inputs(inputs, DRAWS), **kw)[:, 0]        # [DRAWS]


def test_the_expected_distributions_are_far_apart(one_prompt):
    """The test below can tell the breakages apart from a correct sampler: without the
    temperature, or without the nucleus, the distribution is farther than eps from the right one."""
    _, _, logits = one_prompt
    q, margin = nucleus(logits, T, TOP_P)
    assert margin > 1e-5             # no token sits on the nucleus boundary (float noise is ~1e-7)
    eps = tv_bound(TOP + 2, DRAWS)
    untempered = nucleus(logits, 1.0, TOP_P)[0]
    untruncated = torch.softmax(logits.double() / T, -1)
    for wrong in (untempered, untruncated):
        assert 0.5 * (binned(wrong, q) - binned(q, q)).abs().sum() > 2 * eps


@pytest.mark.parametrize("sampler", ["shared", "plain", "generate"])
def test_draws_follow_the_tempered_nucleus(one_prompt, sampler):
    model, inputs, logits = one_prompt
    q, _ = nucleus(logits, T, TOP_P)
    tokens = draw(sampler, model, inputs)
    assert tokens.shape == (DRAWS,)
    empirical = torch.bincount(tokens, minlength=q.shape[0]).double() / DRAWS       # [V]
    tv = 0.5 * (binned(empirical, q) - binned(q, q)).abs().sum().item()
    assert tv < tv_bound(TOP + 2, DRAWS), f"TV {tv:.3f} from softmax(logits / {T}), top-p {TOP_P}"
    outside = (q[tokens] == 0).sum().item()
    assert outside == 0, f"{outside} draws outside the top-p nucleus"
