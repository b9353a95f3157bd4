"""The speed-up of rollout.py: the same samples and log-probs, each prompt read once per group.

rollout.py repeats each prompt x N times: N copies of the image through the vision tower and of
the prompt through the language model, for answers of a few tokens. Here the prompt goes through
the model once; its keys/values in every layer (the KV cache) are repeated N times along the
batch and the N responses attend to them. A response token sees the prompt only through those
keys/values, so this is the same computation as rollout.logprobs, and autograd sums the N
responses' gradients into the one prompt forward. Same API as rollout.py (`sample`, `logprobs`),
the loop's default; tests/test_shared_prefix.py holds the two equal (log-probs to 1e-5, the same
draws for the same seed). Positions: rollout.prefill (the mrope case included).

What else makes it fast, each where it happens below:
  * sampling: a row that has ended leaves the batch (and its cache); the decode cache is written
    in place (`_BufferedLayer`), the outputs are allocated once; on the CPU the draw's noise (the
    step's largest cost after the forward) is vectorised (`_exponential`): the same numbers;
  * scoring: the output head scores the response tokens in chunks (`scored_forward`), never
    holding [rows, T, V] logits.
Gradient checkpointing (transformers 5.x). In train mode a checkpointed `GradientCheckpointingLayer`
drops `past_key_values` unless its `_can_checkpoint_with_cache` is set (a layer that writes the
cache would write it again when the backward recomputes it), and the text model's own flag turns
`use_cache` off. So the prompt forward runs without checkpointing on the decoder layers (the
vision tower keeps it): full activations of B*P prompt tokens instead of rollout's checkpointed
B*n*P. The response forward reads the prompt's keys/values from a read-only cache
(`_PrefixCache`: `update` returns prefix + new, stores nothing), so replaying a layer reads the
same states and the layers keep checkpointing. That needs non-reentrant checkpointing
(transformers' default): reentrant checkpointing passes gradients only to positional inputs and
would silently drop those into the cached keys/values, so with it checkpointing is switched off
for the response forward too (correct, more memory). All flags are put back afterwards.
Tested on CPU with sdpa attention (tiny Qwen2.5-VL, Qwen2-VL, InternVL), not flash-attention.
"""

import inspect
from contextlib import contextmanager

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

import grpo
import rollout
from rollout import Rollouts, tempered


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
    backward replay of checkpointing) sees the same keys and values; `reads` counts the calls."""
    reads = 0

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.reads += 1
        layer = self.layers[layer_idx]  # keys/values: [B*n, kv_heads, P, head_dim]
        return (torch.cat([layer.keys, key_states.to(layer.keys.dtype)], dim=-2),  # bf16 prefix
                torch.cat([layer.values, value_states.to(layer.values.dtype)], dim=-2))


class _BufferedLayer(DynamicLayer):
    """The decode cache's layer: keys/values [R, kv, L, d] are views of buffers with room to grow
    (doubling, up to `room` more positions), so a step writes its one position in place. (A
    DynamicLayer appends with torch.cat: T steps copy O(T^2) positions, briefly twice the cache.)"""

    @classmethod
    def of(cls, layer, room):
        new = cls()
        new.__dict__.update(layer.__dict__)
        new._len, new._limit = layer.keys.shape[-2], layer.keys.shape[-2] + room
        new._k, new._v = layer.keys, layer.values                # capacity = length, for now
        return new

    def _view(self):
        self.keys, self.values = self._k[:, :, :self._len], self._v[:, :, :self._len]

    def update(self, key_states, value_states, *args, **kwargs):
        t, cap = key_states.shape[-2], self._k.shape[-2]
        if self._len + t > cap:                                  # grow: double, within the limit
            cap = max(self._len + t, min(2 * cap, self._limit))
            grown = [b.new_empty(*b.shape[:2], cap, b.shape[-1]) for b in (self._k, self._v)]
            for new, old in zip(grown, (self._k, self._v)):
                new[:, :, :self._len] = old[:, :, :self._len]
            self._k, self._v = grown
        self._k[:, :, self._len:self._len + t] = key_states       # [R, kv, t, d], in place
        self._v[:, :, self._len:self._len + t] = value_states
        self._len += t
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices):
        self._k, self._v = self._k[indices], self._v[indices]
        self._view()


def in_place(cache, room):
    """`cache` (a filled DynamicCache) with every plain DynamicLayer made a _BufferedLayer."""
    cache.layers = [_BufferedLayer.of(layer, room) if type(layer) is DynamicLayer
                    and layer.is_initialized else layer for layer in cache.layers]
    return cache


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
        for m, k, old in saved:   # _MISSING: the class default; drop the instance attribute again
            delattr(m, k) if old is _MISSING else setattr(m, k, old)


def _cache_layers(model):
    """(layers, owners): the checkpointable layers that take a KV cache (the decoder layers), and
    the modules holding them, whose own `gradient_checkpointing` flag only turns `use_cache` off."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)
              and "past_key_values" in inspect.signature(m.forward).parameters]
    ids = {id(m) for m in layers}
    owners = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")
              and id(m) not in ids and any(id(c) in ids for c in m.modules())]
    return layers, owners


def _completion_checkpointing(layers):
    """Attributes that make the response forward correct under checkpointing (see top)."""
    non_reentrant = all(getattr(getattr(m, "_gradient_checkpointing_func", None), "keywords", {})
                        .get("use_reentrant") is False for m in layers)
    return {"_can_checkpoint_with_cache": True} if non_reentrant else {"gradient_checkpointing": False}


class _HeadScorer(torch.nn.Module):
    """Stands in for the output head: hidden states [R, L, H] -> log-probs of `targets` [R, T],
    the last T positions (or those before the last one, skip_last=True) scored by
    `grpo.token_logprobs`, which calls the real head (its hooks included) a chunk at a time."""

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

    The head (`get_output_embeddings()`, any family) is swapped for `_HeadScorer` for this one
    forward, so it receives the model's own last hidden states; running inside the model's
    forward keeps FSDP's parameter gathering and hooks as they are. A family that post-processes
    the head's output (softcapping, scaling) would change the result: that is checked and refused.
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


def logprobs(model, prompt_inputs, ids, mask, temperature=1.0):
    """rollout.logprobs with each of the B prompts run once: log pi_T of ids [R, T], R = B*n.

    Example: B = 2 prompts of P = 190 tokens, n = 32, T = 4. rollout.logprobs reads
    2*32*194 = 12,416 tokens and 64 images; this reads 2*190 prompt tokens and 2 images, then
    64*3 response tokens (token 0 is predicted by the last prompt position).
    """
    (B, P), (R, T) = prompt_inputs["input_ids"].shape, ids.shape
    if R % B:
        raise ValueError(f"ids has {R} rows for {B} prompts; expected B*n (row b*n + j: prompt b).")
    n, t = R // B, tempered(temperature)
    layers, owners = _cache_layers(model)
    with _patched(layers + owners, gradient_checkpointing=False):
        cache = _ComputeCache()
        last_logits, start = rollout.prefill(model, prompt_inputs, cache)
    # token 0: the prompt's last logits [B, V], scored per prompt and picked for its n rows
    first = torch.log_softmax(last_logits.float() / t, dim=-1)                # [B, V]
    token_logp = first.repeat_interleave(n, dim=0).gather(-1, ids[:, :1])     # [R, 1]
    if T > 1:
        kv = [(l.keys.repeat_interleave(n, dim=0), l.values.repeat_interleave(n, dim=0))
              for l in cache.layers]                                 # autograd sums the n copies
        prompt_mask = prompt_inputs["attention_mask"].repeat_interleave(n, dim=0)   # [R, P]
        prefix = _PrefixCache(kv)
        with _patched(owners, gradient_checkpointing=False), \
                _patched(layers, **_completion_checkpointing(layers)):
            # use_cache=False: nothing new is stored; the layers still read the cache passed in
            rest = scored_forward(model, ids[:, 1:], t, input_ids=ids[:, :-1],
                                  attention_mask=torch.cat([prompt_mask, mask[:, :-1].to(
                                      prompt_mask.dtype)], 1),
                                  position_ids=start.repeat_interleave(n, dim=0)
                                  + torch.arange(T - 1, device=start.device),
                                  past_key_values=prefix, use_cache=False)   # [R, T-1]
        if prefix.reads < len(kv):
            raise RuntimeError("The response forward did not attend to the prompt's cache.")
        token_logp = torch.cat([token_logp, rest], dim=1)            # [R, T]
    return token_logp.masked_fill(mask == 0, 0.0)


def _exponential(q, generator=None):
    """q.exponential_(generator=generator), multinomial's noise; on the CPU (where it logs one number
    at a time) from its own formula and uniforms, vectorised: -log1p(-u), u = torch.rand in float64:
    the same float32 numbers but for ~3e-10 of them (a double within a bit of a rounding edge)."""
    if q.device.type != "cpu" or q.dtype != torch.float32:
        return q.exponential_(generator=generator)
    u = torch.rand(q.shape, dtype=torch.float64, generator=generator)    # [R, V] in [0, 1)
    return q.copy_(torch.log1p(u.neg_(), out=u).neg_())                   # -log1p(-u)


def _sample_top_p(logp, top_p, q, rows=None):
    """One token per row from softmax(logp) cut to the top-p nucleus (rollout.nucleus): multinomial
    (probs, 1)'s own draw, argmax(probs / q), q ~ Exp(1) (_exponential) for all rows, read at `rows`
    (None: all): rows leaving the batch change neither the stream nor the draws (rollout.sample's)."""
    probs = rollout.nucleus(torch.softmax(logp, dim=-1), top_p)    # renormalised after suppression
    return probs.div_(q if rows is None or len(rows) == len(q) else q[rows]).argmax(-1)


@torch.no_grad()
def sample(model, prompt_inputs, n, *, max_new_tokens, eos_token_ids, pad_token_id,
           temperature=1.0, top_p=1.0, generator=None, suppress_token_ids=(), any_alive=None,
           stats=()):
    """rollout.sample with one prompt forward, its cache repeated n times: Rollouts [B*n, T].

    A row that has ended leaves the batch (and the cache, written in place), so a step costs the
    rows still decoding; when none is left here but `any_alive` says other processes still
    decode (torchrun), one stand-in row keeps this process stepping with them."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    fns, T = {name: rollout.TOKEN_STATS[name] for name in stats}, max_new_tokens  # when asked
    device = prompt_inputs["attention_mask"].device
    with rollout.eval_mode(model):
        cache = _ComputeCache()
        logits, start = rollout.prefill(model, prompt_inputs, cache)
        cache.batch_repeat_interleave(n)                             # every layer: [R, kv, P, d]
        cache = in_place(cache, T - 1)                               # steps write in place
        logits = logits.repeat_interleave(n, dim=0)                  # [R, V], R = B*n
        prompt_mask = prompt_inputs["attention_mask"].repeat_interleave(n, dim=0)     # [R, P]
        start = start.repeat_interleave(n, dim=0)                    # [R, 1]
        (R, V), P = logits.shape, prompt_mask.shape[1]
        attention = (torch.cat([prompt_mask, prompt_mask.new_ones(R, T - 1)], 1)   # step t: P+t+1
                     if bool((prompt_mask == 0).any()) else None)    # no left padding: no mask
        zeros = lambda dtype=torch.float32: torch.zeros(R, T, dtype=dtype, device=device)  # noqa: E731
        ids, logps, mask, values = (zeros(torch.long).fill_(pad_token_id), zeros(),
                                    zeros(torch.long), {name: zeros() for name in fns})
        eos, suppress = (torch.tensor(list(x), dtype=torch.long, device=device)
                         for x in (eos_token_ids, suppress_token_ids))
        rows = torch.arange(R, device=device)        # the batch's rows, as rows of the R outputs
        live, divisor = True, tempered(temperature)  # live False: the batch is a stand-in row
        q = torch.empty(R, V, device=device)         # the draw's noise, all R rows every step
        for t in range(T):
            scaled = logits.float() if divisor == 1 else logits.float() / divisor
            logp = torch.log_softmax(scaled, dim=-1)                 # [r, V] log pi_T
            for name, f in fns.items() if live else ():              # before suppression
                values[name][rows, t] = f(logp)
            if len(suppress):                        # in place: a drawn token keeps its log-prob
                logp.index_fill_(-1, suppress, float("-inf"))
            drawn = (_sample_top_p(logp, top_p, _exponential(q, generator), rows)
                     if temperature > 0 else logp.argmax(-1))        # [r]
            if live:
                ids[rows, t], mask[rows, t] = drawn, 1
                logps[rows, t] = logp.gather(-1, drawn[:, None])[:, 0]
            keep = ~torch.isin(drawn, eos) if live else torch.zeros_like(drawn, dtype=torch.bool)
            if t + 1 == T or not (any_alive or torch.any)(keep):
                break
            if not keep.all():        # compact; with none left here (torchrun), one stand-in row
                live = bool(keep.any())
                keep = keep.nonzero().squeeze(-1) if live else keep.new_zeros(1, dtype=torch.long)
                rows, drawn, start = rows[keep], drawn[keep], start[keep]
                cache.batch_select_indices(keep)
                attention = None if attention is None else attention[keep]
            logits = model(input_ids=drawn[:, None], position_ids=start + t,
                           attention_mask=None if attention is None else attention[:, :P + t + 1],
                           past_key_values=cache, use_cache=True).logits[:, -1]
    cut = lambda x: x[:, :t + 1].contiguous()        # noqa: E731  (a copy only if it ended early)
    return Rollouts(cut(ids), cut(logps), cut(mask), {k: cut(v) for k, v in values.items()})
