"""Rollouts: N responses per prompt and their per-token log-probs, the plain way.

GRPO draws N responses y_j to each test input x and needs log pi(y_t | x, y_<t) for each token.
Here each prompt (image and text) is repeated N times, a hand-written loop draws the responses
token by token through the model's own KV cache, and one forward over the N [prompt | response]
sequences scores them. shared_prefix.py computes the same numbers with the prompt read once per
group (the loop's default); tests/test_shared_prefix.py holds the two equal.

    roll = sample(model, prompt_inputs, n, temperature=1.0, top_p=1.0, max_new_tokens=8,
                  eos_token_ids=[eos], pad_token_id=pad)        # Rollouts [B*n, T], row b*n + j
    logp = logprobs(model, one_prompt, ids, mask, temperature)  # [n, T], with grad
    Experience(prompt, ids, mask, old_logp, ref_logp, advantages)   # one prompt's group

`prompt_inputs`: the processor output for B prompts (left padded, not repeated), passed to the
model as is. The policy pi_T is softmax(logits / temperature); the sampler's log-probs and the
scorer's are both of pi_T. top_p (the nucleus) and suppressed tokens (image placeholders, which
the scoring forward would read as image slots) only restrict what may be drawn. Left out: top-k,
repetition penalties, beam search, stop strings; the scorer holds [rows, T, V] logits.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache

import vlm


@dataclass
class Rollouts:
    """N sampled completions per prompt; row b*n + j is sample j of prompt b."""
    completion_ids: torch.Tensor  # [B*n, T] long, pad_token_id after each row's first eos
    logprobs: torch.Tensor        # [B*n, T] float32, log pi_T(token) of the drawn token; 0 where mask 0
    mask: torch.Tensor            # [B*n, T] long, 1 up to and including the first eos
    stats: dict = None            # name -> [B*n, T] float32: the TOKEN_STATS asked for; 0 where mask 0


@dataclass
class Experience:
    """One prompt's group, ready for the update (tiny-grpo's Experience): everything the loss
    needs, computed at rollout time. The k trained responses of the prompt's N votes."""
    prompt: dict                  # this prompt's inputs (vlm.split_inputs), not repeated
    ids: torch.Tensor             # [k, T] long, the responses
    mask: torch.Tensor            # [k, T] float, 1 up to and including the first end token
    old_logp: torch.Tensor        # [k, T] log pi_old: the sampler's own log-probs
    ref_logp: torch.Tensor | None  # [k, T] log pi_ref, frozen reference (None when beta = 0)
    advantages: torch.Tensor      # [k] eq. (2)
    weight: float = 1.0           # 0: a stand-in that only keeps processes in step (torchrun)


def tempered(temperature):
    """The divisor of the logits: temperature, or 1 for greedy (temperature 0)."""
    return temperature if temperature > 0 else 1.0


@contextmanager
def eval_mode(model):
    """Eval mode inside the with-block (checkpointing, which drops the KV cache, acts only in
    train mode), every module's own mode put back after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def prefill(model, prompt_inputs, cache):
    """One forward over the prompts into `cache`: (last prompt position's logits [B, V], start).

    start [B, 1]: response token t sits at position start + t, as in the model's own forward
    over [prompt | response] (explicit: transformers 5's Qwen-VL gets a masked decode step wrong):
      * Qwen2-VL / Qwen2.5-VL (3D "mrope"): real prompt length + `model.model.rope_deltas`, which
        the prompt forward stores (reset before it, put back after): the one model-specific line;
      * any other model (1D rope): P, the padded prompt length (default positions count padding).
    """
    inner = getattr(model, "model", None)
    mrope = hasattr(inner, "rope_deltas")  # MODEL-SPECIFIC: Qwen2-VL family keeps 3D rope offsets here
    if mrope:
        saved, inner.rope_deltas = inner.rope_deltas, None
    try:
        out = model(**prompt_inputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
        mask = prompt_inputs["attention_mask"]                      # [B, P]
        if mrope and inner.rope_deltas is not None:                 # (None: no image, 1D positions)
            start = mask.sum(-1, keepdim=True) + inner.rope_deltas.to(mask.device)
        else:
            start = torch.full_like(mask[:, :1], mask.shape[1])
    finally:
        if mrope:
            inner.rope_deltas = saved
    if cache.get_seq_length() != mask.shape[1]:
        raise RuntimeError("The prompt forward did not fill the KV cache (is a layer dropping "
                           "past_key_values, e.g. gradient checkpointing in train mode?).")
    return out.logits[:, -1], start.long()


def nucleus(probs, top_p):
    """probs [R, V] with every token outside the top-p nucleus set to 0 (not renormalised).

    The nucleus is the smallest set of most likely tokens whose mass reaches top_p (the top token
    is always in it). Example: probs [0.5, 0.3, 0.15, 0.05], top_p 0.7: the mass before each
    token is [0, 0.5, 0.8, 0.95], so the nucleus is {0, 1}, drawn with probs 0.5/0.8 and 0.3/0.8.
    """
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    outside = sorted_p.cumsum(-1) - sorted_p >= top_p
    return torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(outside, 0.0))


def entropy(logp):
    """H(p) / ln V of each row of log-probs [R, V] (0 log 0 = 0): in [0, 1], DARE's u scale
    (V: the logits' size; ours, DARE's paper states no scale)."""
    return torch.special.entr(logp.exp()).sum(-1) / math.log(logp.shape[-1])


def self_certainty(logp):
    """KL(U || p) of each row of log-probs [R, V], U uniform over the V tokens: -ln V - mean_v
    log p_v, INTUITOR's self-certainty of one token (0 for a uniform p, large for a peaked one)."""
    return -math.log(logp.shape[-1]) - logp.mean(-1)


# per-token statistics of pi_T a sampler records when asked (sample's `stats`): a reward's inputs
TOKEN_STATS = {"entropy": entropy, "self_certainty": self_certainty}


@torch.no_grad()
def sample(model, prompt_inputs, n, *, max_new_tokens, eos_token_ids, pad_token_id,
           temperature=1.0, top_p=1.0, generator=None, suppress_token_ids=(), any_alive=None,
           stats=()):
    """n completions for each of B prompts, the prompts repeated n times: Rollouts [B*n, T].

    Decoding stops once every row has produced an end token (T <= max_new_tokens); a row that has
    is fed pad and masked out. temperature 0 is greedy (log-probs then of temperature 1).
    `generator` makes draws reproducible; `any_alive(alive)` says whether any row still decodes
    (under torchrun all processes answer it, so they run the same number of forwards). `stats`:
    names of TOKEN_STATS computed at each step from the same log-probs (none unless asked).
    Example: n = 3, eos 2, pad 0 may give completion_ids [[9, 2, 0], [5, 7, 2], ...], mask
    [[1, 1, 0], [1, 1, 1], ...]; rows 0-2 answer prompt 0, rows 3-5 prompt 1.
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    inputs = vlm.repeat_inputs(prompt_inputs, n)                     # [R, P], R = B*n
    attention = inputs["attention_mask"]
    eos = torch.tensor(eos_token_ids, device=attention.device)
    suppress = torch.tensor(list(suppress_token_ids), dtype=torch.long, device=attention.device)
    alive = torch.ones(attention.shape[0], dtype=torch.bool, device=attention.device)  # [R]
    cache, steps = DynamicCache(), []                                # (token, logp, mask, *stats)
    stat_fns = [TOKEN_STATS[name] for name in stats]
    with eval_mode(model):
        logits, start = prefill(model, inputs, cache)                # [R, V], [R, 1]
        for t in range(max_new_tokens):
            logp = torch.log_softmax(logits.float() / tempered(temperature), dim=-1)  # log pi_T
            drawable = logp.index_fill(-1, suppress, float("-inf")) if len(suppress) else logp
            if temperature > 0:                                      # softmax renormalises
                probs = nucleus(torch.softmax(drawable, dim=-1), top_p)
                token = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                token = drawable.argmax(-1)
            token = token.masked_fill(~alive, pad_token_id)          # [R], pad after the end
            steps.append((token, logp.gather(-1, token[:, None])[:, 0] * alive, alive.long(),
                          *(f(logp) * alive for f in stat_fns)))
            alive = alive & ~torch.isin(token, eos)
            if t + 1 == max_new_tokens or not (any_alive or torch.any)(alive):
                break
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
            logits = model(input_ids=token[:, None], attention_mask=attention,
                           position_ids=start + t, past_key_values=cache,
                           use_cache=True).logits[:, -1]
    ids, logps, mask, *values = (torch.stack(x, dim=1) for x in zip(*steps))
    return Rollouts(ids, logps, mask, dict(zip(stats, values)))


def logprobs(model, prompt_inputs, ids, mask, temperature=1.0):
    """log pi_T(y_t | x, y_<t) of responses ids [R, T] to B prompts (R = B*n, row b*n + j
    answers prompt b), one forward over [prompt | response] x n: [R, T], 0 where mask is 0.

    Other [R, P, ...] tensors (mm_token_type_ids) are extended with zeros (the response is text).
    Position P-1+t predicts token t. With grad unless under torch.no_grad (reference, old policy).
    """
    B, (R, T) = prompt_inputs["input_ids"].shape[0], ids.shape
    if R % B:
        raise ValueError(f"ids has {R} rows for {B} prompts; expected B*n (row b*n + j: prompt b).")
    inputs = dict(vlm.repeat_inputs(prompt_inputs, R // B))
    P = inputs["input_ids"].shape[1]
    for key, value in inputs.items():
        if torch.is_tensor(value) and value.dim() >= 2 and tuple(value.shape[:2]) == (R, P):
            tail = mask if key == "attention_mask" else ids if key == "input_ids" else \
                value.new_zeros((R, T) + tuple(value.shape[2:]))
            inputs[key] = torch.cat([value, tail.to(value.device, value.dtype)], dim=1)
    logits = model(**inputs, use_cache=False, logits_to_keep=T + 1).logits[:, :-1]   # [R, T, V]
    logp = torch.log_softmax(logits.float() / tempered(temperature), dim=-1)
    return logp.gather(-1, ids[..., None].to(logp.device))[..., 0].masked_fill(mask == 0, 0.0)
