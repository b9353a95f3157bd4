"""Rollouts: N responses per prompt and their per-token log-probs, the prompt read once per group.

GRPO draws N responses for each test input x and needs log pi(y_j | x) for every one of them.
The plain way (harness/plain.py, the reference this path is tested against) repeats x N times:
N copies of the image through the vision tower and of the prompt through the language model, for
answers of a few tokens. Here the prompt goes through the model once; its keys/values in every
layer (the KV cache) are repeated N times along the batch and the N completions attend to them.
A completion token sees the prompt only through those keys/values, so this is the same
computation as the plain forward over N concatenated sequences, and autograd sums the N
completions' gradients into the one prompt forward. (Unlike the plain forward, a sampled
<|image_pad|> in a completion is not mistaken for an image slot.)

    roll = sample(model, prompt_inputs, n, temperature=1.0, top_p=1.0, max_new_tokens=8,
                  eos_token_ids=[eos], pad_token_id=pad)        # Rollouts [B*n, T], row b*n + j
    logp = logprobs(model, one_prompt, ids, mask, temperature)  # [n, T], with grad
    Experience(prompt, ids, mask, old_logp, ref_logp, advantages)   # one prompt's group

`prompt_inputs` is the processor output for B prompts (left padded, NOT repeated): input_ids,
attention_mask, pixel_values, image_grid_thw, mm_token_type_ids, ... passed to the model as is.

Positions. A completion token t sits at position `start + t`, passed explicitly, where `start`
is what the model itself would give the first token after the prompt:
  * Qwen2-VL / Qwen2.5-VL (3D "mrope"): the prompt forward stores `model.model.rope_deltas`
    [B, 1]; text after the prompt is at (real prompt length + delta) on all three axes. This is
    the only model-specific knowledge here, in `_prefill`; rope_deltas is reset before the
    prompt forward (so it is this prompt's) and put back after.
  * any other model (1D rope, e.g. InternVL's Qwen2 / Llama text model): HF's default positions
    arange(P + T) run over the left padding too, so `start` = P, the padded prompt length.

Gradient checkpointing (transformers 5.x). In train mode a checkpointed `GradientCheckpointingLayer`
drops `past_key_values` (and `use_cache`) unless its `_can_checkpoint_with_cache` is set, since a
layer that writes the cache would write it again when the backward pass recomputes it; and the
text model's own flag turns `use_cache` off. So:
  * prompt forward: checkpointing is switched off on the decoder layers and the text model (the
    vision tower keeps it): full activations of B*P prompt tokens instead of the plain path's
    checkpointed B*n*P.
  * completion forward: the prompt's keys/values sit in a read-only cache (`_PrefixCache`: its
    `update` returns prefix + new without storing; use_cache=False), so replaying a layer reads
    the same states and the layers keep checkpointing. That needs non-reentrant checkpointing
    (transformers' default): reentrant checkpointing only passes gradients to positional inputs
    and would silently drop those into the cached prompt keys/values, so with it checkpointing
    is switched off for the completion forward too (correct, more memory). Both forwards check
    that the cache was really used. All flags are put back afterwards.
Train vs eval mode changes nothing here: the Qwen models have no dropout (attention_dropout 0).

What it leaves out: sliding-window / hybrid caches, top-k, repetition penalties, beam search,
stop strings; completions are teacher-forced as given (no check that they came from the sampler).
Tested on CPU with sdpa attention (tiny Qwen2.5-VL, Qwen2-VL, InternVL), not flash-attention.
"""

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer

import grpo
import kv_cache


@dataclass
class Rollouts:
    """N sampled completions per prompt; row b*n + j is sample j of prompt b."""
    completion_ids: torch.Tensor  # [B*n, T] long, pad_token_id after each row's first eos
    logprobs: torch.Tensor        # [B*n, T] float32, log pi_T(token) of the drawn token; 0 where mask 0
    entropies: torch.Tensor       # [B*n, T] float32, H(pi_T) / ln V at that step (V: the logits'
                                  # size), in [0, 1]: DARE's u scale (ours; its paper states none)
    mask: torch.Tensor            # [B*n, T] long, 1 up to and including the first eos


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


class _ComputeCache(DynamicCache):
    """transformers' DynamicCache with keys and values in the autocast dtype. Under bf16
    autocast RoPE's fp32 cos/sin make the keys fp32, and DynamicCache then keeps both in fp32
    (twice the memory); attention under autocast casts them to bf16 itself, so no result changes."""

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        device = key_states.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            key_states, value_states = key_states.to(dtype), value_states.to(dtype)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)


class _PrefixCache(DynamicCache):
    """A read-only KV cache: every layer's prompt keys/values, new tokens attend to them.

    `update` returns cat(prefix, new) and stores nothing, so a layer that is run again (the
    backward replay of gradient checkpointing) sees exactly the same keys and values. `reads`
    counts the calls, so we can check that the model really attended to the prefix.
    """
    reads = 0

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.reads += 1
        layer = self.layers[layer_idx]  # keys/values: [B*n, kv_heads, P, head_dim]
        return (torch.cat([layer.keys, key_states.to(layer.keys.dtype)], dim=-2),  # bf16 prefix
                torch.cat([layer.values, value_states.to(layer.values.dtype)], dim=-2))


_MISSING = object()


@contextmanager
def _patched(modules, **attrs):
    """Set attributes on modules inside a with-block, then put back exactly what was there."""
    saved = [(m, k, m.__dict__.get(k, _MISSING)) for m in modules for k in attrs]
    try:
        for m in modules:
            for k, v in attrs.items():
                setattr(m, k, v)
        yield
    finally:
        for m, k, old in saved:
            if old is _MISSING:
                delattr(m, k)   # it was the class default: drop the instance attribute again
            else:
                setattr(m, k, old)


def _cache_layers(model):
    """(layers, owners): the checkpointable layers that take a KV cache (the decoder layers), and
    the modules holding them, whose own `gradient_checkpointing` flag only turns `use_cache` off
    in train mode (with a misleading warning; the cache we pass is used either way)."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)
              and "past_key_values" in inspect.signature(m.forward).parameters]
    ids = {id(m) for m in layers}
    owners = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")
              and id(m) not in ids and any(id(c) in ids for c in m.modules())]
    return layers, owners


def _completion_checkpointing(layers):
    """Attributes that make the completion forward correct under checkpointing (see top)."""
    non_reentrant = all(getattr(getattr(m, "_gradient_checkpointing_func", None), "keywords", {})
                        .get("use_reentrant") is False for m in layers)
    return {"_can_checkpoint_with_cache": True} if non_reentrant else {"gradient_checkpointing": False}


def _tempered(temperature):
    """The divisor of the logits: temperature, or 1 for greedy (temperature 0)."""
    return temperature if temperature > 0 else 1.0


def _prefill(model, prompt_inputs):
    """One forward over the B prompts with a fresh cache.

    Returns (cache with P positions per layer, logits of the last prompt position [B, V],
    start [B, 1] = position id of the first completion token). With left padding the last
    position is every row's real last token.
    """
    inner = getattr(model, "model", None)
    mrope = hasattr(inner, "rope_deltas")  # MODEL-SPECIFIC: Qwen2-VL family keeps 3D rope offsets here
    if mrope:
        saved, inner.rope_deltas = inner.rope_deltas, None
    try:
        cache = _ComputeCache()
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
    return cache, out.logits[:, -1], start.long()


class _HeadScorer(torch.nn.Module):
    """Stands in for the output head: hidden states [R, L, H] -> log-probs of `targets` [R, T].

    Scores the last T positions (or those before the last one, skip_last=True) with
    `grpo.token_logprobs`, calling the real head (its hooks included) one chunk at a time.
    """

    def __init__(self, head, targets, temperature, skip_last):
        super().__init__()
        object.__setattr__(self, "head", head)       # not a submodule: no second copy of it
        self.targets, self.temperature, self.skip_last, self.calls = (targets, temperature,
                                                                      skip_last, [])

    def forward(self, hidden):                                                   # [R, L, H]
        end, T = hidden.shape[1] - int(self.skip_last), self.targets.shape[1]
        self.calls.append(grpo.token_logprobs(self.head, hidden[:, end - T:end], self.targets,
                                         self.temperature))
        return self.calls[-1]


def scored_forward(model, targets, temperature=1.0, skip_last=False, **inputs):
    """model(**inputs) with its output head scoring `targets`: log pi_T [R, T], no [R, T, V].

    The head (`get_output_embeddings()`, e.g. lm_head, any family) is swapped for `_HeadScorer`
    for this one forward (`set_output_embeddings`), so it receives the model's own last hidden
    states. Running inside the model's forward, rather than on model.model's output, keeps
    FSDP's parameter gathering and hooks as they are. A family that post-processes the head's
    output (softcapping, scaling) would change the result: that is checked and refused.
    """
    head = model.get_output_embeddings()
    scorer = _HeadScorer(head, targets, temperature, skip_last)
    model.set_output_embeddings(scorer)
    try:
        logits = model(**inputs).logits
    finally:
        model.set_output_embeddings(head)
    if len(scorer.calls) != 1 or logits is not scorer.calls[0]:
        raise RuntimeError(f"{type(model).__name__} changes its head's output (or calls the "
                           "head twice); token log-probs cannot be computed from the head here.")
    return logits


def shared_prefix_logprobs(model, prompt_inputs, completion_ids, completion_mask, n,
                           temperature=1.0):
    """Per-token log pi_T(y_t | x, y_<t) of given completions, the prompt run once per group.

    completion_ids / completion_mask: [B*n, T], row b*n + j is completion j of prompt b (the
    layout `sample` returns). Works with autograd (policy) and under torch.no_grad
    (reference model, old policy). Equals the plain forward over the repeated, concatenated
    sequences; positions where the mask is 0 are set to 0.

    Example: B = 2 prompts of P = 190 tokens, n = 32, T = 4. The plain forward reads
    2*32*194 = 12,416 tokens and 64 images; this reads 2*190 prompt tokens and 2 images, then
    64*3 completion tokens (token 0 is predicted by the last prompt position).
    """
    T = completion_ids.shape[1]
    if completion_ids.shape[0] != prompt_inputs["input_ids"].shape[0] * n:
        raise ValueError(f"completion_ids has {completion_ids.shape[0]} rows; expected B*n = "
                         f"{prompt_inputs['input_ids'].shape[0]}*{n} (row b*n + j: prompt b).")
    layers, owners = _cache_layers(model)
    with _patched(layers + owners, gradient_checkpointing=False):
        cache, last_logits, start = _prefill(model, prompt_inputs)
    # token 0: the prompt's last logits [B, V], scored per prompt and picked for its n rows
    first = torch.log_softmax(last_logits.float() / _tempered(temperature), dim=-1)  # [B, V]
    prompt_of_row = torch.arange(first.shape[0], device=first.device).repeat_interleave(n)
    token_logp = first[prompt_of_row, completion_ids[:, 0]][:, None]          # [B*n, 1]
    if T > 1:
        kv = [(l.keys.repeat_interleave(n, dim=0), l.values.repeat_interleave(n, dim=0))
              for l in cache.layers]                                 # autograd sums the n copies
        prompt_mask = prompt_inputs["attention_mask"].repeat_interleave(n, dim=0)   # [B*n, P]
        attention_mask = torch.cat([prompt_mask, completion_mask[:, :-1].to(prompt_mask.dtype)], 1)
        positions = start.repeat_interleave(n, dim=0) + torch.arange(T - 1, device=start.device)
        prefix = _PrefixCache(kv)
        with _patched(owners, gradient_checkpointing=False), \
                _patched(layers, **_completion_checkpointing(layers)):
            # use_cache=False: nothing new is stored; the layers still read the cache passed in.
            # The head scores tokens 1..T-1 in chunks (scored_forward): no [B*n, T, V].
            rest = scored_forward(model, completion_ids[:, 1:], _tempered(temperature),
                                       input_ids=completion_ids[:, :-1],
                                       attention_mask=attention_mask, position_ids=positions,
                                       past_key_values=prefix, use_cache=False)  # [B*n, T-1]
        if prefix.reads < len(kv):
            raise RuntimeError("The completion forward did not attend to the prompt's cache.")
        token_logp = torch.cat([token_logp, rest], dim=1)            # [B*n, T]
    return token_logp.masked_fill(completion_mask == 0, 0.0)


def _sample_top_p(logp, top_p, generator=None, rows=None, total=None):
    """One token per row from softmax(logp) restricted to the top-p nucleus.

    The nucleus is the smallest set of most likely tokens whose mass reaches top_p (the top token
    is always in it). Example: probs [0.5, 0.3, 0.15, 0.05], top_p 0.7: the mass before each
    token is [0, 0.5, 0.8, 0.95], so the nucleus is {0, 1}, drawn with probs 0.5/0.8 and 0.3/0.8.

    The draw is torch.multinomial(probs, 1)'s own, argmax(probs / q) with q ~ Exp(1) (a test checks
    it), with q drawn for all `total` rows and read at `rows` (those still decoding): dropping
    finished rows leaves the random stream and every other row's draw as they were.
    """
    # Renormalise first: `logp` may have -inf at suppressed tokens (placeholders) and then sums
    # to less than 1; generate's nucleus is built on the renormalised distribution too.
    probs = torch.softmax(logp, dim=-1)                              # [rows, V]
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p >= top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(outside, 0.0))
    q = torch.empty((total or probs.shape[0], probs.shape[1]), dtype=probs.dtype,
                    device=probs.device).exponential_(generator=generator)   # [total, V]
    return (probs / (q if rows is None else q[rows])).argmax(-1)


@torch.no_grad()
def sample(model, prompt_inputs, n, *, temperature, top_p, max_new_tokens, eos_token_ids,
                  pad_token_id, generator=None, suppress_token_ids=(), any_alive=None):
    """Draw n completions for each of B prompts: one prompt forward, the cache repeated n times.

    Returns `Rollouts` of [B*n, T] (T <= max_new_tokens: decoding stops once every row has
    produced an eos; a row that has stops costing forwards). `logprobs` is log_softmax(logits / temperature) at the drawn token, the
    tempered policy exactly as `shared_prefix_logprobs(..., temperature)` computes it, so it can
    serve as the old-policy log-prob; top_p only restricts which tokens may be drawn and is not
    renormalised into it; likewise `suppress_token_ids` (image/video placeholders, which the next
    forward would read as image slots) are never drawn. temperature == 0 is greedy (argmax; logprobs/entropies then of the
    temperature-1 distribution). `generator` (on the model's device) makes draws reproducible.
    The model runs in eval mode without checkpointing; its modes and flags are restored after.
    `any_alive(alive)` says whether any row still decodes (default: of these rows); under
    torchrun the processes answer it together, so they all run the same number of forwards.

    Example: B = 2, n = 3, eos = 2, pad = 0 may give completion_ids [[9, 2, 0], [5, 7, 2], ...]
    with mask [[1, 1, 0], [1, 1, 1], ...]; rows 0-2 answer prompt 0, rows 3-5 prompt 1.
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with _patched([m for m in model.modules() if hasattr(m, "gradient_checkpointing")],
                      gradient_checkpointing=False):
            return _decode(model, prompt_inputs, n, temperature, top_p, max_new_tokens,
                           eos_token_ids, pad_token_id, generator, suppress_token_ids,
                           any_alive or (lambda alive: bool(alive.any())))
    finally:
        for m, training in modes:
            m.training = training


def _decode(model, prompt_inputs, n, temperature, top_p, max_new_tokens, eos_token_ids,
            pad_token_id, generator, suppress_token_ids, any_alive):
    """The decode loop; a row that has ended leaves the batch (and the cache, written in place:
    kv_cache.py), so a step costs the rows still decoding (entropy: -sum p log p, 0 log 0 = 0)."""
    cache, logits, start = _prefill(model, prompt_inputs)
    cache.batch_repeat_interleave(n)                                 # every layer: [R, kv, P, d]
    cache = kv_cache.in_place(cache, max_new_tokens - 1)             # steps write in place
    logits = logits.repeat_interleave(n, dim=0)                      # [R, V], R = B*n
    attention_mask = prompt_inputs["attention_mask"].repeat_interleave(n, dim=0)  # [R, P]
    start = start.repeat_interleave(n, dim=0)                        # [R, 1]
    padded = bool((attention_mask == 0).any())     # else all ones, the same as no mask: None
    R, device = logits.shape[0], logits.device
    eos = torch.tensor(eos_token_ids, device=device)
    suppress = torch.tensor(list(suppress_token_ids), dtype=torch.long, device=device)
    rows = torch.arange(R, device=device)          # the batch's rows, as rows of the R outputs
    alive = torch.ones(R, dtype=torch.bool, device=device)           # [R] before its eos
    steps = []                                                       # (token, logp, entropy, mask)
    for t in range(max_new_tokens):
        logp = torch.log_softmax(logits.float() / _tempered(temperature), dim=-1)  # [r, V]
        drawable = logp.index_fill(-1, suppress, float("-inf")) if len(suppress) else logp
        drawn = (_sample_top_p(drawable, top_p, generator, rows, R) if temperature > 0
                 else drawable.argmax(-1))                           # [r]
        token = drawn.new_full((R,), pad_token_id).index_copy(0, rows, drawn)   # [R]
        token_logp = logp.new_zeros(R).index_copy(0, rows, logp.gather(-1, drawn[:, None])[:, 0])
        # -sum p log p (0 log 0 = 0) over ln V, its largest value: in [0, 1], DARE's u scale
        entropy = logp.new_zeros(R).index_copy(0, rows, torch.special.entr(logp.exp()).sum(-1)
                                               / math.log(logp.shape[-1]))
        steps.append((token.masked_fill(~alive, pad_token_id), token_logp * alive,
                      entropy * alive, alive.long()))
        alive = alive & ~torch.isin(token, eos)
        if not any_alive(alive) or t + 1 == max_new_tokens:
            break
        keep = alive[rows]                                           # [r]
        if not keep.all():        # compact; with none left here (torchrun), one stand-in row
            keep = keep.nonzero().squeeze(-1) if keep.any() else keep.new_zeros(1, dtype=torch.long)
            rows, drawn = rows[keep], drawn[keep]
            cache.batch_select_indices(keep)
            attention_mask, start = attention_mask[keep], start[keep]
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], 1)
        logits = model(input_ids=drawn[:, None], attention_mask=attention_mask if padded else None,
                       position_ids=start + t, past_key_values=cache,
                       use_cache=True).logits[:, -1]
    ids, logps, ents, mask = (torch.stack(x, dim=1) for x in zip(*steps))
    return Rollouts(completion_ids=ids, logprobs=logps, entropies=ents, mask=mask)


# The loop's second call beside `sample` (ttrv.adapt); harness/plain.py offers both over N copies.

def logprobs(model, one_prompt, ids, mask, temperature=1.0):
    """log pi_T of one prompt's responses ids [n, T] (with grad unless under no_grad): [n, T]."""
    return shared_prefix_logprobs(model, one_prompt, ids, mask, ids.shape[0], temperature)
