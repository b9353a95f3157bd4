"""shared_prefix.sample drops finished rows from the decode batch: same draws, fewer rows per
forward, and its decode cache is written in place.

The reference is rollout.sample, the decode loop without compaction: all B*n rows run every step
and torch.multinomial draws the tokens. The shared sampler must give the same tokens and masks
for the same seed (its draw is multinomial's own, with the noise of every row drawn), and
log-probs / entropies equal up to float rounding (a forward over fewer rows may round differently).
"""
import pytest
import torch

import rollout
import shared_prefix
from conftest import random_text_lm

V, EOS = 300, list(range(0, 300, 9))      # many end tokens: rows end at different steps


@pytest.fixture(scope="module")
def text_lm():
    return random_text_lm(V, 256)


def prompts():
    """Three left-padded text prompts of lengths 6, 8, 9 (no image)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3], mask[1, :1] = 0, 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def reference_sample(model, inputs, n, temperature, top_p, max_new_tokens, seed, generator=None):
    """The uncompacted loop: every row runs every step; finished rows are fed the pad token."""
    r = rollout.sample(model, inputs, n, temperature=temperature, top_p=top_p,
                       max_new_tokens=max_new_tokens, eos_token_ids=EOS, pad_token_id=0,
                       generator=generator or torch.Generator().manual_seed(seed),
                       stats=("entropy",))
    return r.completion_ids, r.logprobs, r.stats["entropy"], r.mask


def sample(model, inputs, n, temperature, top_p, max_new_tokens, seed, generator=None, **kw):
    return shared_prefix.sample(model, inputs, n, temperature=temperature, top_p=top_p,
                                max_new_tokens=max_new_tokens, eos_token_ids=EOS, pad_token_id=0,
                                generator=generator or torch.Generator().manual_seed(seed), **kw)


def noise(shape, seed):
    """q as torch.multinomial(probs, 1) draws it: empty_like(probs).exponential_()."""
    g = torch.Generator().manual_seed(seed)
    return torch.empty(shape).exponential_(generator=g), g


def test_draw_is_multinomials_own():
    probs = torch.softmax(torch.randn(16, 500) * 3, -1)
    for top_p in (1.0, 0.8):
        q, g1 = noise(probs.shape, 4)
        g2 = torch.Generator().manual_seed(4)
        a = shared_prefix._sample_top_p(probs.log(), top_p, q)
        if top_p < 1.0:
            sorted_p, order = probs.sort(-1, descending=True)
            sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= top_p, 0.0)
            b = torch.multinomial(torch.zeros_like(probs).scatter(-1, order, sorted_p), 1,
                                  generator=g2)[:, 0]
        else:
            b = torch.multinomial(probs.log().softmax(-1), 1, generator=g2)[:, 0]
        assert torch.equal(a, b) and torch.equal(g1.get_state(), g2.get_state())


@pytest.mark.parametrize("seed, shape", [(0, (64, 512)), (1, (3, 151_936)), (2, (1500, 1000))])
def test_the_cpu_noise_is_exponentials_own_numbers(seed, shape):
    """_exponential's CPU path (-log1p(-u) over torch.rand's float64 uniforms, vectorised) gives
    q.exponential_()'s float32 numbers bit for bit and leaves the generator where it does."""
    q, g1 = noise(shape, seed)
    g2 = torch.Generator().manual_seed(seed)
    ours = shared_prefix._exponential(torch.empty(shape), g2)
    assert torch.equal(ours, q) and torch.equal(g1.get_state(), g2.get_state())
    wide = torch.empty(shape, dtype=torch.float64)        # other dtypes: exponential_ itself
    q64 = wide.clone().exponential_(generator=torch.Generator().manual_seed(seed))
    assert torch.equal(shared_prefix._exponential(wide, torch.Generator().manual_seed(seed)), q64)


def test_a_row_subset_draws_what_the_full_batch_draws():
    probs = torch.softmax(torch.randn(12, 50), -1)
    rows = torch.tensor([1, 5, 6, 11])
    q = noise((12, 50), 2)[0]
    full = shared_prefix._sample_top_p(probs.log(), 1.0, q)
    part = shared_prefix._sample_top_p(probs[rows].log(), 1.0, q, rows)
    assert torch.equal(part, full[rows])


@pytest.mark.parametrize("temperature, top_p, padded", [(1.0, 1.0, True), (0.7, 0.9, True),
                                                       (1.0, 1.0, False)])
def test_same_tokens_as_the_uncompacted_loop(text_lm, temperature, top_p, padded):
    inputs = prompts() if padded else {k: v[2:] for k, v in prompts().items()}  # one, unpadded
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    r = sample(text_lm, inputs, 5, temperature, top_p, 16, seed=3, generator=g1, stats=("entropy",))
    ids, logp, ent, mask = reference_sample(text_lm, inputs, 5, temperature, top_p, 16, 3, g2)
    assert len(set(r.mask.sum(-1).tolist())) > 3                    # rows end at many steps
    assert torch.equal(r.completion_ids, ids) and torch.equal(r.mask, mask)
    assert torch.equal(g1.get_state(), g2.get_state())   # noise drawn only for a step that runs
    torch.testing.assert_close(r.logprobs, logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.stats["entropy"], ent, atol=1e-5, rtol=0)


def test_each_forward_runs_only_the_rows_still_decoding(text_lm):
    seen = []
    hook = text_lm.register_forward_pre_hook(
        lambda m, args, kw: seen.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        r = sample(text_lm, prompts(), 5, 1.0, 1.0, 16, seed=3)
    finally:
        hook.remove()
    assert seen[0] == (3, 9)                                         # the prompt forward
    decode_rows = [s[0] for s in seen[1:]]                           # decode step t = 1, 2, ...
    assert decode_rows == r.mask[:, 1:].sum(0).tolist()              # = rows alive at step t
    assert decode_rows[-1] < decode_rows[0] <= 15


@pytest.mark.parametrize("sampler, rows", [(shared_prefix, 1), (rollout, 6)])
def test_stand_in_row_when_others_still_decode(text_lm, sampler, rows):
    """Under torchrun a process whose rows all ended keeps stepping with the others: the shared
    sampler with one stand-in row, the plain one with all its (padded) rows."""
    calls, seen = [], []
    hook = text_lm.register_forward_pre_hook(
        lambda m, args, kw: seen.append(kw["input_ids"].shape[0]), with_kwargs=True)
    try:
        r = sampler.sample(text_lm, prompts(), 2, temperature=1.0, top_p=1.0,
                           max_new_tokens=4, eos_token_ids=list(range(V)),  # every token ends
                           pad_token_id=0,
                           any_alive=lambda alive: calls.append(1) or len(calls) < 4)
    finally:
        hook.remove()
    assert r.completion_ids.shape == (6, 4) and r.mask[:, 0].tolist() == [1] * 6
    assert r.mask[:, 1:].sum() == 0 and (r.completion_ids[:, 1:] == 0).all()
    assert seen[1:] == [rows] * 3


# ----------------------------------------------------------------------------- kv_cache

def test_buffered_layer_matches_dynamic_cache_and_writes_in_place():
    from transformers import DynamicCache

    g = torch.Generator().manual_seed(0)
    prompt = [torch.randn(4, 2, 5, 8, generator=g) for _ in range(2)]
    plain, buffered = DynamicCache(), DynamicCache()
    plain.update(*prompt, 0)
    buffered.update(*prompt, 0)
    buffered = shared_prefix.in_place(buffered, room=40)
    layer, pointers = buffered.layers[0], set()
    for step in range(30):
        new = [torch.randn(plain.layers[0].keys.shape[0], 2, 1, 8, generator=g) for _ in range(2)]
        k1, v1 = plain.update(*new, 0)
        k2, v2 = buffered.update(*new, 0)
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
        assert buffered.get_seq_length() == plain.get_seq_length() == 6 + step
        pointers.add(layer._k.data_ptr())
        if step == 10:                                      # rows 1 and 3 end
            keep = torch.tensor([0, 2])
            plain.batch_select_indices(keep)
            buffered.batch_select_indices(keep)
    assert len(pointers) <= 5        # regrown by doubling (5 -> 10 -> 20 -> 40 -> 45) + 1 select
