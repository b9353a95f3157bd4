"""shared_prefix.sample on a text-only causal LM (no image, 1D positions), and its in-place decode cache:
the log-probs are the plain forward's over left-padded prompts, every end token ends a row,
greedy decoding never draws a suppressed token, the decode steps write the cache in place
(within the room asked for), and the model's modes come back. A random-weight Qwen2 LM built
from a config; each check compares against a computation written out here."""

import math

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

import shared_prefix
from conftest import random_text_lm
import rollout

V = 200
NEVER = (V + 1,)                       # an end token outside the vocabulary: rows run on


@pytest.fixture(scope="module")
def lm():
    return random_text_lm(V, 128)


def prompts():
    """Two left-padded prompts of 4 and 7 tokens."""
    ids = torch.randint(5, V, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def sample(model, n=3, max_new_tokens=6, eos=(1,), seed=0, **kw):
    options = {**dict(temperature=1.0, top_p=1.0), **kw}
    return shared_prefix.sample(model, prompts(), n, max_new_tokens=max_new_tokens,
                          eos_token_ids=list(eos), pad_token_id=0,
                          generator=torch.Generator().manual_seed(seed), **options)


def plain_logprobs(model, ids, n, temperature=1.0):
    """log pi_T of each drawn token by one forward over [padded prompt, completion] rows, the
    model's own positions (running over the left padding, as the prompt forward's do)."""
    p = prompts()
    full = torch.cat([p["input_ids"].repeat_interleave(n, 0), ids], 1)
    mask = torch.cat([p["attention_mask"].repeat_interleave(n, 0), torch.ones_like(ids)], 1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=mask).logits.float() / temperature
    P = p["input_ids"].shape[1]
    logp = torch.log_softmax(logits[:, P - 1:-1], -1)                            # [R, T, V]
    return logp.gather(-1, ids[..., None])[..., 0]


def test_the_log_probs_are_the_plain_forward_s_over_left_padded_prompts(lm):
    r = sample(lm, temperature=0.8, eos=NEVER)
    assert r.completion_ids.shape == (6, 6) and r.mask.all()
    torch.testing.assert_close(r.logprobs, plain_logprobs(lm, r.completion_ids, 3, 0.8),
                               atol=1e-5, rtol=1e-5)


def test_every_end_token_ends_a_row_and_the_row_is_padded_after_it(lm):
    eos = list(range(0, V, 7))                        # many end tokens: rows end at many steps
    r = sample(lm, n=8, max_new_tokens=12, eos=eos)
    ended = torch.isin(r.completion_ids, torch.tensor(eos)) & r.mask.bool()
    lengths = r.mask.sum(1)
    assert len(set(lengths.tolist())) > 2 and ended.any()
    for row, n in enumerate(lengths.tolist()):
        ids = r.completion_ids[row]
        first_end = next((t for t in range(n) if int(ids[t]) in eos), None)
        assert first_end == n - 1 or (first_end is None and n == 12), (row, ids, n)
        assert (ids[n:] == 0).all() and (r.logprobs[row, n:] == 0).all()


def test_greedy_decoding_never_draws_a_suppressed_token(lm):
    free = sample(lm, temperature=0.0, eos=NEVER)
    banned = free.completion_ids.unique().tolist()     # everything greedy chose
    r = sample(lm, temperature=0.0, eos=NEVER, suppress_token_ids=banned)
    assert not torch.isin(r.completion_ids, torch.tensor(banned)).any()
    again = sample(lm, temperature=0.0, eos=NEVER, suppress_token_ids=banned, seed=5)
    assert torch.equal(r.completion_ids, again.completion_ids)             # greedy: no draws


def test_decode_steps_write_the_cache_in_place(lm, monkeypatch):
    calls, real = [], DynamicLayer.update
    monkeypatch.setattr(DynamicLayer, "update", lambda self, *a, **k: calls.append(
        type(self).__name__) or real(self, *a, **k))
    r = sample(lm, eos=NEVER)
    assert r.completion_ids.shape[1] == 6
    assert calls == ["DynamicLayer"] * 2              # the prompt forward only, one per layer


def test_the_buffer_grows_to_at_most_the_room_asked_for():
    cache = DynamicCache()
    cache.update(torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 4), 0)
    cache = shared_prefix.in_place(cache, room=5)
    layer, sizes = cache.layers[0], []
    for step in range(5):
        cache.update(torch.full((2, 1, 1, 4), step + 1.0), torch.zeros(2, 1, 1, 4), 0)
        sizes.append(layer._k.shape[-2])
    assert sizes[-1] == 3 + 5 and max(sizes) == 8 and len(set(sizes)) < 5   # doubling, capped
    assert layer.keys[0, 0, :, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5]
    cache.batch_select_indices(torch.tensor([1]))
    assert layer.keys.shape == (1, 1, 8, 4) and layer._k.shape[0] == 1


def test_sampling_puts_back_the_model_s_modes(lm):
    lm.train()
    lm.model.layers[1].eval()                          # a mixed state comes back as it was
    try:
        sample(lm, max_new_tokens=2)
        assert lm.training and lm.model.layers[0].training and not lm.model.layers[1].training
    finally:
        lm.eval()


def test_token_stats_are_of_the_tempered_distribution(lm):
    """Entropy over ln V (DARE's u) and KL(uniform || pi_T) (INTUITOR's self-certainty), each
    against torch.distributions on a forward written out here; none is computed unless asked."""
    r = sample(lm, temperature=1.7, max_new_tokens=1, eos=NEVER,
               stats=("entropy", "self_certainty"))
    p = prompts()
    with torch.no_grad():
        logits = lm(**p).logits[:, -1].float().repeat_interleave(3, 0) / 1.7
    pi = torch.distributions.Categorical(logits=logits)
    uniform = torch.distributions.Categorical(logits=torch.zeros_like(logits))
    torch.testing.assert_close(r.stats["entropy"][:, 0], pi.entropy() / math.log(V),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.stats["self_certainty"][:, 0],
                               torch.distributions.kl_divergence(uniform, pi), atol=1e-4, rtol=1e-5)
    assert sample(lm, temperature=1.7, max_new_tokens=1, eos=NEVER).stats == {}


def test_self_certainty_is_zero_for_uniform_and_grows_as_pi_peaks():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0]])
    c = rollout.self_certainty(torch.log_softmax(logits, -1))
    assert abs(float(c[0])) < 1e-6 and 0 < c[1] < c[2]
