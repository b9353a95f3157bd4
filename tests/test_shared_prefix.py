"""shared_prefix.py against the plain path, rollout.py (fp32, CPU): the same log-probs (to 1e-5),
the same gradients, and the same draws for the same seed.

rollout.logprobs repeats each prompt (and its image's pixel rows) n times, appends the
completion, runs one ordinary `model(**inputs)` forward and gathers log_softmax(logits / T) at
the completion tokens (tests/test_plain.py holds it to a forward written out there; InternVL's
is written out here). rollout.sample draws with torch.multinomial from the same nucleus, every
row every step. The random tiny model can draw <|image_pad|>, which a plain
forward would mistake for an image slot, so a logits hook on lm_head masks the image/video pad
tokens; both paths see the same hook, so the comparisons stay exact.
"""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import eval as evaluation
import rollout
from shared_prefix import logprobs as shared_logprobs, sample as sample_shared

QUESTIONS = ["What?", "What is shown in this image? Answer A or B.", "Name the shape."]
SIZES = [(56, 56), (112, 84), (84, 112)]   # (h, w): 16, 48, 48 patches -> 4, 12, 12 image tokens


def load(path):
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    banned = torch.tensor([model.config.image_token_id, model.config.video_token_id])
    model.lm_head.register_forward_hook(lambda m, i, out: out.index_fill(-1, banned, -1e4))
    return model.eval(), processor


@pytest.fixture(scope="module")
def qwen25(tiny_dir):
    return load(tiny_dir)


@pytest.fixture(scope="module")
def qwen2(tiny_qwen2_dir):
    return load(tiny_qwen2_dir)


def prompts(processor, idx=(0, 1, 2)):
    """Left-padded processor inputs for the chosen questions/images (different lengths)."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (*SIZES[i], 3), dtype=np.uint8)) for i in idx]
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[i]}]}],
        add_generation_prompt=True, tokenize=False) for i in idx]
    return dict(processor(text=texts, images=images, return_tensors="pt", padding=True))


def completions(rows, T, eos, pad, seed=0):
    """Random completions [rows, T] with early eos in some rows; mask 1 up to and incl. eos."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, 400, (rows, T), generator=g)   # 0-6 are special tokens
    mask = torch.ones(rows, T, dtype=torch.long)
    for row, at in [(1, 2), (4, 0), (6, 3), (8, 1)]:       # row ends with eos at position `at`
        if row < rows and at < T:
            ids[row, at], ids[row, at + 1:], mask[row, at + 1:] = eos, pad, 0
    return ids, mask


def plain_logprobs(model, inputs, completion_ids, completion_mask, n, temperature=1.0):
    """The reference: rollout.logprobs, n copies of each prompt + its completion, one forward."""
    assert completion_ids.shape[0] == inputs["input_ids"].shape[0] * n
    return rollout.logprobs(model, inputs, completion_ids, completion_mask, temperature)


def eos_pad(processor):
    return processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprob_parity(qwen25, temperature):
    model, processor = qwen25
    inputs = prompts(processor)
    assert len(set(inputs["attention_mask"].sum(-1).tolist())) == 3   # really left padded
    ids, mask = completions(9, 5, *eos_pad(processor))
    with torch.no_grad():
        shared = shared_logprobs(model, inputs, ids, mask, temperature)
        plain = plain_logprobs(model, inputs, ids, mask, 3, temperature)
    assert shared.shape == (9, 5)
    torch.testing.assert_close(shared * mask, plain, atol=1e-5, rtol=0)
    assert (shared[mask == 0] == 0).all()
    one = shared_logprobs(model, inputs, ids[:, :1], mask[:, :1], temperature)  # T = 1
    torch.testing.assert_close(one, plain[:, :1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError):                        # rows must be B*n
        shared_logprobs(model, inputs, ids[:7], mask[:7])


def grads(model, fn):
    model.zero_grad(set_to_none=True)
    fn().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a, b):
    assert a.keys() == b.keys() and any("visual" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def grad_case(processor, n=3, T=5):
    inputs = prompts(processor)
    ids, mask = completions(3 * n, T, *eos_pad(processor))
    weights = torch.randn(3 * n, T, generator=torch.Generator().manual_seed(1))
    return inputs, ids, mask, weights


def test_gradient_parity(qwen25):
    model, processor = qwen25
    inputs, ids, mask, w = grad_case(processor)
    shared = grads(model, lambda: (shared_logprobs(model, inputs, ids, mask, 0.7)
                                   * mask * w).sum())
    plain = grads(model, lambda: (plain_logprobs(model, inputs, ids, mask, 3, 0.7) * w).sum())
    assert_same_grads(shared, plain)
    assert all(g.abs().sum() > 0 for k, g in shared.items() if "visual" in k)


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # the no_grad check
def test_gradient_checkpointing_train_mode(tiny_dir, reentrant):
    model, processor = load(tiny_dir)                      # own copy: flags are changed here
    inputs, ids, mask, w = grad_case(processor)
    loss = lambda: (shared_logprobs(model, inputs, ids, mask) * mask * w).sum()
    reference = grads(model, lambda: (plain_logprobs(model, inputs, ids, mask, 3) * w).sum())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model.train()
    calls = []                                             # attention runs, replays included
    model.model.language_model.layers[0].self_attn.register_forward_hook(lambda *a: calls.append(1))
    assert_same_grads(grads(model, loss), reference)
    # prompt (not checkpointed) + completions (+ their replay, unless reentrant forced it off)
    assert len(calls) == (2 if reentrant else 3)
    layers = model.model.language_model.layers
    assert model.training and all(l.gradient_checkpointing for l in layers)
    assert all("_can_checkpoint_with_cache" not in l.__dict__ for l in layers)
    with torch.no_grad():                                  # also fine without autograd
        torch.testing.assert_close(shared_logprobs(model, inputs, ids, mask) * mask,
                                   plain_logprobs(model, inputs, ids, mask, 3), atol=1e-5, rtol=0)


def sample(model, processor, inputs, n=4, seed=0, eos=None, sampler=sample_shared, **kw):
    args = dict(temperature=0.7, top_p=0.9, max_new_tokens=6, pad_token_id=eos_pad(processor)[1],
                eos_token_ids=eos or list(range(0, 400, 3)),   # many "eos" ids: rows end early;
                generator=torch.Generator().manual_seed(seed),     # 0 is pad and eos at once
                stats=("entropy",))
    return sampler(model, inputs, n, **{**args, **kw})


@pytest.mark.parametrize("fixture", ["qwen25", "qwen2"])
def test_both_samplers_draw_the_same_tokens(request, fixture):
    """The same seed, the same tokens from rollout.sample and the shared sampler: both draw
    multinomial's own way, the shared one drawing every row's noise even after the row left its
    batch. Log-probs and entropies equal up to float rounding (different batch shapes)."""
    model, processor = request.getfixturevalue(fixture)
    inputs = prompts(processor)
    for kw in (dict(), dict(temperature=1.0, top_p=1.0), dict(temperature=0)):
        fast = sample(model, processor, inputs, **kw)
        plain = sample(model, processor, inputs, sampler=rollout.sample, **kw)
        assert torch.equal(fast.completion_ids, plain.completion_ids), kw
        assert torch.equal(fast.mask, plain.mask)
        if kw.get("temperature", 0.7) > 0:                          # rows ended at different steps
            assert len(set(fast.mask.sum(-1).tolist())) > 1
        torch.testing.assert_close(fast.logprobs, plain.logprobs, atol=1e-5, rtol=0)
        torch.testing.assert_close(fast.stats["entropy"], plain.stats["entropy"], atol=1e-5, rtol=0)


def test_sampler_layout_and_logprobs(qwen25):
    model, processor = qwen25
    inputs, pad, eos = prompts(processor), eos_pad(processor)[1], list(range(0, 400, 3))
    r = sample(model, processor, inputs)
    rows, T = r.completion_ids.shape
    assert rows == 12 and T <= 6 and r.logprobs.shape == r.stats["entropy"].shape == r.mask.shape
    for ids, m in zip(r.completion_ids.tolist(), r.mask.tolist()):
        length = sum(m)
        assert m == [1] * length + [0] * (T - length)
        assert all(t not in eos for t in ids[:length - 1]) and all(t == pad for t in ids[length:])
        assert length == T or ids[length - 1] in eos
    assert len(set(r.mask.sum(-1).tolist())) > 1                   # rows ended at different steps
    assert (r.logprobs[r.mask == 0] == 0).all() and (r.stats["entropy"][r.mask == 1] > 0).all()
    plain = plain_logprobs(model, inputs, r.completion_ids, r.mask, 4, 0.7)
    torch.testing.assert_close(r.logprobs, plain, atol=1e-5, rtol=0)
    again = sample(model, processor, inputs)
    assert torch.equal(again.completion_ids, r.completion_ids)      # seeded -> reproducible
    assert not torch.equal(sample(model, processor, inputs, seed=1).completion_ids,
                           r.completion_ids)


def test_sampler_entropy_and_top_p(qwen25):
    model, processor = qwen25
    inputs = prompts(processor, (0, 1))
    r = sample(model, processor, inputs, n=2, max_new_tokens=1, temperature=1.3)
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1].repeat_interleave(2, 0) / 1.3
    expected = torch.distributions.Categorical(logits=logits).entropy() / math.log(logits.shape[-1])
    torch.testing.assert_close(r.stats["entropy"][:, 0], expected, atol=1e-5, rtol=1e-5)
    greedy = sample(model, processor, inputs, n=2, temperature=0)
    nucleus_of_one = sample(model, processor, inputs, n=2, temperature=1.0, top_p=1e-9)
    assert torch.equal(nucleus_of_one.completion_ids, greedy.completion_ids)


@pytest.mark.parametrize("fixture", ["qwen25", "qwen2"])
def test_greedy_matches_generate(request, fixture):
    model, processor = request.getfixturevalue(fixture)
    inputs = prompts(processor)
    eos, pad = eos_pad(processor)
    model.train()
    model.gradient_checkpointing_enable()
    try:
        r = sample(model, processor, inputs, n=2, temperature=0, max_new_tokens=8, eos=[eos])
        assert model.training and model.model.language_model.layers[0].gradient_checkpointing
        p = sample(model, processor, inputs, n=2, temperature=0, max_new_tokens=8, eos=[eos],
                   sampler=rollout.sample)
        assert model.training and model.model.language_model.layers[0].gradient_checkpointing
        assert torch.equal(p.completion_ids, r.completion_ids)
    finally:
        model.gradient_checkpointing_disable()
        model.eval()
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=8, eos_token_id=eos,
                             pad_token_id=pad)[:, inputs["input_ids"].shape[1]:]
    for row in range(6):
        length = int(r.mask[row].sum())
        assert r.completion_ids[row, :length].tolist() == out[row // 2, :length].tolist()
    plain = plain_logprobs(model, inputs, r.completion_ids, r.mask, 2, 1.0)  # greedy: temp 1
    torch.testing.assert_close(r.logprobs, plain, atol=1e-5, rtol=0)


def test_qwen2_vl_parity(qwen2):
    model, processor = qwen2
    inputs, (ids, mask) = prompts(processor), completions(9, 5, *eos_pad(processor))
    with torch.no_grad():
        torch.testing.assert_close(shared_logprobs(model, inputs, ids, mask, 0.7) * mask,
                                   plain_logprobs(model, inputs, ids, mask, 3, 0.7),
                                   atol=1e-5, rtol=0)
    r = sample(model, processor, inputs)
    torch.testing.assert_close(r.logprobs, plain_logprobs(model, inputs, r.completion_ids,
                                                          r.mask, 4, 0.7), atol=1e-5, rtol=0)
    w = torch.randn(9, 5, generator=torch.Generator().manual_seed(1))
    assert_same_grads(
        grads(model, lambda: (shared_logprobs(model, inputs, ids, mask) * mask * w).sum()),
        grads(model, lambda: (plain_logprobs(model, inputs, ids, mask, 3) * w).sum()))


def test_rope_deltas_hygiene(qwen25):
    """Batch sizes change between calls (3 prompts, 2, generate with 3); nothing goes stale."""
    model, processor = qwen25
    two = prompts(processor, (1, 0))
    with torch.no_grad():
        before = model(**two).logits
    model.model.rope_deltas = None
    r = sample(model, processor, prompts(processor), n=5)           # prompt batch 3, rows 15
    assert model.model.rope_deltas is None                          # put back as it was
    sample(model, processor, prompts(processor), n=5, sampler=rollout.sample)
    assert model.model.rope_deltas is None
    with torch.no_grad():
        torch.testing.assert_close(model(**two).logits, before, atol=1e-6, rtol=0)
        model.generate(**prompts(processor), do_sample=False, max_new_tokens=3)
        stale = model.model.rope_deltas                             # [3, 1] from generate
        ids, mask = completions(4, 4, *eos_pad(processor))
        shared = shared_logprobs(model, two, ids, mask)
        assert model.model.rope_deltas is stale
        torch.testing.assert_close(shared * mask, plain_logprobs(model, two, ids, mask, 2),
                                   atol=1e-5, rtol=0)
    r2 = sample(model, processor, two, n=3)
    torch.testing.assert_close(r2.logprobs, plain_logprobs(model, two, r2.completion_ids,
                                                           r2.mask, 3, 0.7), atol=1e-5, rtol=0)
    assert r.completion_ids.shape[0] == 15


def test_placeholder_tokens_are_never_sampled_by_either_sampler(tiny_dir):
    """A model that loves <|image_pad|> still never emits it; logprobs stay the full policy's."""
    import grpo
    import vlm
    processor = AutoProcessor.from_pretrained(tiny_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    image_id = model.config.image_token_id
    model.lm_head.register_forward_hook(lambda m, i, out: out.index_add(
        -1, torch.tensor([image_id]), torch.full_like(out[..., :1], 30.0)))
    inputs, pad = prompts(processor), eos_pad(processor)[1]
    banned = vlm.placeholder_token_ids(model)
    assert image_id in banned
    kw = dict(temperature=1.0, top_p=1.0, max_new_tokens=4, eos_token_ids=[2], pad_token_id=pad)
    assert (sample_shared(model, inputs, 4, **kw).completion_ids == image_id).any()  # loves it
    for sampler in (sample_shared, rollout.sample):
        r = sampler(model, inputs, 4, suppress_token_ids=banned, **kw)
        assert not torch.isin(r.completion_ids, torch.tensor(banned)).any()
        assert (r.logprobs[r.mask.bool()] < -20).all()  # drawn tokens: full-distribution logp
    ids = evaluation.generate(model, inputs, suppress_token_ids=banned, **kw)
    assert not torch.isin(ids, torch.tensor(banned)).any()


def test_top_p_nucleus_is_built_after_suppression_as_generate_does():
    """Issue 12 (a): the nucleus comes from the distribution with the placeholders renormalised
    away, as in `generate` (suppress_tokens runs before the top-p warper)."""
    from transformers.generation.logits_process import TopPLogitsWarper

    from shared_prefix import _sample_top_p
    # token 0 (a placeholder, suppressed) holds half the mass; the rest 0.3, 0.15, 0.05
    logp = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    drawable = logp.index_fill(-1, torch.tensor([0]), float("-inf"))      # as _decode builds it
    for top_p in (0.5, 0.6, 0.8, 0.95):
        hf = TopPLogitsWarper(top_p)(None, drawable.clone())
        allowed = set(torch.isfinite(hf[0]).nonzero().flatten().tolist())
        q = torch.empty(400, 4).exponential_(generator=torch.Generator().manual_seed(0))
        drawn = {_sample_top_p(drawable.expand(400, -1), top_p, q)[i].item() for i in range(400)}
        assert drawn == allowed, (top_p, drawn, allowed)


# ---------------------------------------------------------------------------------------------
# InternVL: 1D rope (start = padded prompt length P) and a different number of tiles per prompt.
IVL_SIZES = [(56, 56), (112, 112), (56, 168), (84, 56)]   # (h, w) -> 1, 5, 4, 7 tiles (+thumbnail)


@pytest.fixture(scope="module")
def internvl(tiny_internvl_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_internvl_dir, dtype=torch.float32)
    return model.eval(), AutoProcessor.from_pretrained(tiny_internvl_dir)


def internvl_case(processor, n=3, T=5):
    """Mixed tile counts, left padded, random completions free of special tokens (ids 0-10)."""
    import vlm
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (*s, 3), dtype=np.uint8)) for s in IVL_SIZES]
    questions = [QUESTIONS[i % 3] for i in range(len(images))]
    inputs = vlm.prompt_inputs(processor, images, questions)
    g = torch.Generator().manual_seed(0)
    rows = len(images) * n
    ids = torch.randint(11, len(processor.tokenizer), (rows, T), generator=g)
    mask = torch.ones(rows, T, dtype=torch.long)
    eos, pad = eos_pad(processor)
    for row, at in [(1, 2), (4, 0), (6, 3)]:
        ids[row, at], ids[row, at + 1:], mask[row, at + 1:] = eos, pad, 0
    return inputs, ids, mask


def internvl_plain(model, inputs, ids, mask, n, temperature=1.0):
    """The reference, written out: each prompt's own tiles n times, one ordinary forward."""
    tiles = inputs.pixel_rows
    pixels = torch.cat([p for p in inputs["pixel_values"].split(tiles) for _ in range(n)])
    P = inputs["input_ids"].shape[1]
    logits = model(input_ids=torch.cat([inputs["input_ids"].repeat_interleave(n, 0), ids], 1),
                   attention_mask=torch.cat([inputs["attention_mask"].repeat_interleave(n, 0),
                                             mask], 1), pixel_values=pixels).logits
    logp = torch.log_softmax(logits[:, P - 1:-1].float() / temperature, -1)
    return logp.gather(-1, ids[..., None]).squeeze(-1) * mask


def test_internvl_mixed_tiles_logprob_and_gradient_parity(internvl):
    model, processor = internvl
    inputs, ids, mask = internvl_case(processor)
    assert inputs.pixel_rows == [1, 5, 4, 7]                  # tiles per prompt differ
    assert len(set(inputs["attention_mask"].sum(-1).tolist())) == 4
    with torch.no_grad():
        written_out = internvl_plain(model, inputs, ids, mask, 3, 0.7)
        torch.testing.assert_close(shared_logprobs(model, inputs, ids, mask, 0.7) * mask,
                                   written_out, atol=1e-5, rtol=0)
        torch.testing.assert_close(rollout.logprobs(model, inputs, ids, mask, 0.7), written_out,
                                   atol=1e-5, rtol=0)
    w = torch.randn(*ids.shape, generator=torch.Generator().manual_seed(1))
    shared = grads(model, lambda: (shared_logprobs(model, inputs, ids, mask)
                                   * mask * w).sum())
    plain = grads(model, lambda: (internvl_plain(model, inputs, ids, mask, 3) * w).sum())
    assert shared.keys() == plain.keys() and any("vision_tower" in k for k in shared)
    for k in shared:
        torch.testing.assert_close(shared[k], plain[k], rtol=1e-4, atol=1e-5, msg=k)


def test_internvl_sampler_logprobs_match_the_plain_forward(internvl):
    model, processor = internvl
    inputs, _, _ = internvl_case(processor)
    eos, pad = eos_pad(processor)
    kw = dict(temperature=0.7, top_p=1.0, max_new_tokens=4, eos_token_ids=[eos], pad_token_id=pad,
              suppress_token_ids=list(range(11)))       # no special token is drawn
    r = sample_shared(model, inputs, 2, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(r.logprobs, internvl_plain(model, inputs, r.completion_ids,
                                                          r.mask, 2, 0.7), atol=1e-5, rtol=0)
    p = rollout.sample(model, inputs, 2, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(p.completion_ids, r.completion_ids) and torch.equal(p.mask, r.mask)
    torch.testing.assert_close(p.logprobs, r.logprobs, atol=1e-5, rtol=0)
