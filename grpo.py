"""GRPO, the optimiser TTRV uses: advantages, log-probs, clipped loss, lr schedule, sampling.

TTRV (arXiv 2510.06783) samples N responses per unlabeled test input, scores them with its
frequency/entropy reward (rewards.py), and updates the VLM with GRPO. This file is that update,
one function per phase, in the order a training step calls them:

    ids    = sample(model, prompt_inputs, ...)                        # [B*N, T]  one generate call
    mask   = completion_mask(ids, eos_token_ids)                      # [B*N, T]
    A      = group_advantages(rewards)                                # [B, N]    eq. (2)
    logp   = completion_logprobs(model, prompt_inputs, ids, mask)     # [B*N, T]  with grad
    old    = logp.detach()   if no update happened since sampling (ratio exactly 1); else the
             log-probs computed under no_grad right after sampling, before the first update
    ref    = completion_logprobs(ref_model, ...) under no_grad        # frozen copy, eq. (1)
    loss, stats = grpo_loss(logp, old, ref, A.flatten(), mask)
    set_lr(optimizer, cosine_lr(batch, batches, peak_lr)); loss.backward(); clip; step

Conventions follow the paper's official code (a verl fork): clip 0.2 both sides, dual clip 3.0,
k3 ("low_var_kl") KL to the reference with beta 0.001, token-mean aggregation, cosine lr stepped
once per batch of prompts. One difference by default: the advantage std is the population std
(ddof=0); the official code's torch.std is unbiased (ddof=1, `--protocol official`).

What it leaves out: rewards and answer extraction (rewards.py), repeating a prompt batch N times
(the caller), the training loop, optimiser construction and model loading (ttrv.py), vLLM, and
any sharing of the prompt/image across the N rows (every row re-encodes its image, as in every
public VLM GRPO implementation; see shared_prefix.py).
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.utils.checkpoint

# ----------------------------------------------------------------------------- advantages


def group_advantages(rewards: torch.Tensor, baseline: str = "group",
                     eps: float = 1e-6, ddof: int = 0) -> torch.Tensor:
    """Advantages of eq. (2): A_ij = (r_ij - mean) / (std + eps), shape [B, N] -> [B, N].

    rewards[b, j] is the reward of response j to input b. `baseline` picks what mean/std are over:
      "group": over the N responses of each input (eq. 2, GRPO);
      "batch": over all B*N rewards of the step (several inputs share one baseline);
      "none":  no baseline, A = r (eq. 9, plain policy gradient / REINFORCE).
    std is the population std by default (ddof=0), our reading of the paper's std_j; the official
    code (torch.std, core_algos.py), TRL and EasyR1 use ddof=1 (`ddof=1`, --adv-ddof 1), which
    gives |A| smaller by sqrt((N-1)/N). eps = 1e-6 is added to std. Where the std is below 1e-8 (all
    rewards of the group equal) A is exactly 0, never NaN, as in the paper's Appendix E. Computed
    in float64 (float32 rounding alone can exceed 1e-8), returned in the rewards' dtype.

    Why the diversity reward does nothing under the per-group baseline: eq. (7) is
    R_j = r1_j + alpha * r2 with r2 = -H(P) one number per input, the same for all N responses.
    The group mean of R is mean(r1) + alpha*r2, so R_j - mean = r1_j - mean(r1) and the std is
    unchanged too: alpha*r2 cancels exactly (up to rounding) and A does not depend on alpha. Any
    term constant within a group cancels the same way. With "batch" (r2 differs between inputs)
    or "none" it does act.

    >>> group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]]))
    tensor([[ 1.0000, -1.0000, -1.0000,  1.0000],
            [ 0.0000,  0.0000,  0.0000,  0.0000]])
    """
    dtype = rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()
    if baseline == "none":
        return rewards.to(dtype, copy=True)
    # float64 inside: in float32 the mean of eight 0.7s is off by ~6e-8, a "std" above 1e-8
    rewards = rewards.double()
    if baseline == "group":
        mean = rewards.mean(dim=1, keepdim=True)                       # [B, 1]
        std = rewards.std(dim=1, keepdim=True, correction=ddof)        # [B, 1]
    elif baseline == "batch":
        mean, std = rewards.mean(), rewards.std(correction=ddof)       # scalars
    else:
        raise ValueError(f"Unknown baseline {baseline!r}; use 'group', 'batch' or 'none'.")
    adv = (rewards - mean) / (std + eps)                               # [B, N]
    return torch.where(std < 1e-8, torch.zeros_like(adv), adv).to(dtype)


# ----------------------------------------------------------------------------- masks, log-probs


def completion_mask(completion_ids: torch.Tensor, eos_token_ids: list[int]) -> torch.Tensor:
    """float32 [B, T]: 1.0 up to and including the first end token of each row, 0.0 after.

    A row without an end token (cut at max_new_tokens) is all 1. Works when pad == eos: only the
    first eos counts, the padding eos tokens after it are masked.

    >>> completion_mask(torch.tensor([[5, 2, 0, 0], [5, 6, 2, 2], [5, 6, 7, 8]]), [2])
    tensor([[1., 1., 0., 0.],
            [1., 1., 1., 0.],
            [1., 1., 1., 1.]])
    """
    ends = torch.isin(completion_ids, torch.tensor(eos_token_ids, device=completion_ids.device))
    ends_before = ends.long().cumsum(dim=1) - ends.long()   # [B, T] end tokens strictly before t
    return (ends_before == 0).float()


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


# Tokens whose logits exist at once while scoring responses. The result does not depend on it
# (a memory/speed knob, not a hyperparameter, hence a constant): with V = 151,936 one chunk's
# fp32 log-softmax is 0.16 GB and the forward + backward of a chunk peaks at ~0.5 GB
# (`python bench.py --logprob-memory`), whatever rows x T is; a [256, H] x [H, V] matmul
# is still large enough that the per-chunk overhead does not matter.
LOGPROB_CHUNK = 256


def _chunk_logprobs(project, hidden, targets, temperature):
    """[C, H] hidden states -> log softmax(project(hidden) / temperature)[targets]: [C]."""
    logp = torch.log_softmax(project(hidden).float() / temperature, dim=-1)      # [C, V]
    return logp.gather(-1, targets[:, None]).squeeze(-1)


def token_logprobs(project, hidden, targets, temperature=1.0, chunk=None):
    """log pi_T(targets) from hidden states [R, T, H], `chunk` tokens at a time: [R, T].

    `project` maps [C, H] -> logits [C, V] (the model's output head). Only one chunk's [C, V]
    logits exist at a time, so memory is bounded by `chunk`, not by R x T x V. With grad enabled
    each chunk is activation-checkpointed (non-reentrant): its logits are recomputed in the
    backward instead of being kept, so the backward does not hold R x T x V either.

    Example: R = 32 responses x T = 1,024 tokens, V = 151,936: the full log_softmax held
    32 x 1,024 x 151,936 x 4 B = 20 GB; a chunk of 256 tokens holds 0.16 GB.
    """
    R, T, H = hidden.shape
    chunk = chunk or LOGPROB_CHUNK
    flat, ids = hidden.reshape(R * T, H), targets.reshape(R * T).to(hidden.device)
    checkpointed = torch.is_grad_enabled()
    parts = []
    for c in range(0, R * T, chunk):
        args = (project, flat[c:c + chunk], ids[c:c + chunk], temperature)
        parts.append(torch.utils.checkpoint.checkpoint(_chunk_logprobs, *args, use_reentrant=False)
                     if checkpointed else _chunk_logprobs(*args))
    return torch.cat(parts).reshape(R, T) if parts else hidden.new_zeros(R, T)


class _HeadScorer(torch.nn.Module):
    """Stands in for the output head: hidden states [R, L, H] -> log-probs of `targets` [R, T].

    Scores the last T positions (or those before the last one, skip_last=True) with
    `token_logprobs`, calling the real head (its hooks included) one chunk at a time.
    """

    def __init__(self, head, targets, temperature, skip_last):
        super().__init__()
        object.__setattr__(self, "head", head)       # not a submodule: no second copy of it
        self.targets, self.temperature, self.skip_last, self.calls = (targets, temperature,
                                                                      skip_last, [])

    def forward(self, hidden):                                                   # [R, L, H]
        end, T = hidden.shape[1] - int(self.skip_last), self.targets.shape[1]
        self.calls.append(token_logprobs(self.head, hidden[:, end - T:end], self.targets,
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


def completion_logprobs(model, prompt_inputs: dict, completion_ids: torch.Tensor,
                        completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every completion token under a Hugging Face VLM: [B, T].

    prompt_inputs is a processor output (input_ids [B, P] left padded, attention_mask [B, P],
    mm_token_type_ids [B, P], pixel_values, image_grid_thw, ...) whose rows are aligned with the
    completion rows (the caller repeats each prompt N times). The forward sees
    input_ids = [prompt | completion] and attention_mask = [prompt mask | completion_mask]; other
    [B, P, ...] tensors (mm_token_type_ids: completion tokens are text, 0) are zero-padded over
    the completion, everything else (pixel_values, image_grid_thw) is passed through.

    The head runs only on the last T+1 positions (logits_to_keep); position P-1+t predicts
    completion token t, the final one predicts past the end and is skipped. Log-probs come from
    the hidden states in chunks (`scored_forward`, `token_logprobs`), never as [B, T, V]. The
    logits are divided by the sampling temperature, so the log-probs are those of the
    distribution the tokens were sampled from. Values at positions where completion_mask is 0
    are finite but meaningless; callers multiply by the mask. Grad flows if called with grad.

    Positions: Qwen2-VL/2.5-VL compute 3D rope positions from input_ids, mm_token_type_ids and
    image_grid_thw; transformers 5 recomputes them whenever no KV cache is passed, so the
    rope_deltas that generate leaves on model.model (with generate's batch size) are not reused.
    """
    ids, attn = prompt_inputs["input_ids"], prompt_inputs["attention_mask"]          # [B, P]
    B, P = ids.shape
    T = completion_ids.shape[1]
    inputs = dict(prompt_inputs)
    for key, value in prompt_inputs.items():
        if key in ("input_ids", "attention_mask") or not torch.is_tensor(value):
            continue
        if value.dim() >= 2 and tuple(value.shape[:2]) == (B, P):       # mm_token_type_ids
            zeros = value.new_zeros((B, T) + tuple(value.shape[2:]))
            inputs[key] = torch.cat([value, zeros], dim=1)                  # [B, P+T, ...]
    inputs["input_ids"] = torch.cat([ids, completion_ids.to(ids.device)], dim=1)        # [B, P+T]
    inputs["attention_mask"] = torch.cat([attn, completion_mask.to(attn.device, attn.dtype)], dim=1)
    if _keeps_logits(model):      # older forwards: the head sees every position, we slice it
        inputs["logits_to_keep"] = T + 1
    return scored_forward(model, completion_ids, temperature, skip_last=True, use_cache=False,
                          **inputs)                                                  # [B, T]


# ----------------------------------------------------------------------------- the loss


LOG_RATIO_CLAMP = 20.0  # verl core_algos.py: log-ratios clamped to [-20, 20] before exp


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, *, clip_eps: float = 0.2,
              beta: float = 0.001, dual_clip: float | None = 3.0, aggregation: str = "token_mean",
              max_len: int | None = None) -> tuple[torch.Tensor, dict]:
    """The GRPO loss (to minimise) and a dict of float stats. logp etc. [B, T], advantages [B].

    Per token, with ratio = exp(clamp(logp - old_logp, -20, 20)) and A the advantage of the token's sequence:
      surrogate = -min(ratio*A, clip(ratio, 1-clip_eps, 1+clip_eps)*A)         (PPO clip)
      dual clip, for A < 0 only: surrogate = min(surrogate, -dual_clip*A)  (verl's clip_ratio_c)
        (a ratio above dual_clip with A < 0 would make the loss unbounded; it is capped at
        dual_clip*|A| and its gradient stopped. A >= 0 tokens are untouched.)
      kl = exp(d) - d - 1, d = clamp(ref - logp, -20, 20), clamped to [-10, 10]  (k3, "low_var_kl")
      loss_t = surrogate + beta*kl   (no KL term when beta == 0 or ref_logp is None)
    The clipped branch has zero gradient: for A > 0 once ratio > 1+eps, for A < 0 once
    ratio < 1-eps. At ratio 1 (one update per rollout batch) the gradient of the surrogate wrt
    logp is exactly -A per token: the plain policy gradient.

    aggregation of loss_t over the tokens where mask == 1 (masked values never enter):
      "token_mean":    sum_bt / sum(mask)                 (official code, DAPO, TRL's default)
      "sequence_mean": mean_b (sum_t / len_b)             (original GRPO: each sequence weighs 1/B)
      "dr_grpo":       sum_bt / (B * max_len)             (Dr. GRPO; max_len defaults to T)
    E.g. lengths 1 and 3 with loss 4 on every token of the first, 0 on the second:
    token_mean 4/4 = 1, sequence_mean (4 + 0)/2 = 2, dr_grpo (T=3) 4/6.

    stats: "loss", "pg_loss" (surrogate alone, same aggregation), "kl" (mean per-token KL),
    "clip_frac" (tokens whose clipped branch was selected, gradient stopped), "dual_clip_frac",
    "ratio", "ratio_max" (over masked tokens), "adv" (mean advantage per sequence).
    """
    mask = mask.to(logp.dtype)
    A = advantages.to(logp.dtype).unsqueeze(1)                         # [B, 1]
    # verl clamps the log-ratio to [-20, 20] before exp: a masked position's huge log-ratio
    # would give exp = inf there and a NaN gradient (0 * inf) that grad clipping spreads.
    ratio = torch.exp((logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))  # [B, T]
    unclipped = -ratio * A                                             # [B, T]
    clipped = -torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * A      # [B, T]
    surrogate = torch.maximum(unclipped, clipped)                      # = -min(ratio*A, clip*A)
    is_clipped = clipped > unclipped                                   # [B, T]
    is_dual = torch.zeros_like(is_clipped)
    if dual_clip is not None:
        cap = -dual_clip * A                                           # [B, 1], > 0 where A < 0
        is_dual = (A < 0) & (surrogate > cap)
        surrogate = torch.where(A < 0, torch.minimum(surrogate, cap), surrogate)

    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        d = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # verl's clamp, as above
        kl = (torch.exp(d) - d - 1).clamp(-10.0, 10.0)                 # [B, T], >= 0
    per_token = surrogate + beta * kl if (beta != 0 and ref_logp is not None) else surrogate

    def aggregate(x):                                                  # [B, T] -> scalar
        x = torch.where(mask > 0, x, torch.zeros_like(x))
        if aggregation == "token_mean":
            return x.sum() / mask.sum().clamp(min=1)
        if aggregation == "sequence_mean":
            return (x.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
        if aggregation == "dr_grpo":
            return x.sum() / (x.shape[0] * (max_len if max_len is not None else x.shape[1]))
        raise ValueError(f"Unknown aggregation {aggregation!r}; "
                         "use 'token_mean', 'sequence_mean' or 'dr_grpo'.")

    loss = aggregate(per_token)
    with torch.no_grad():
        stats = {
            "loss": loss.item(),
            "pg_loss": aggregate(surrogate).item(),
            "kl": _masked_mean(kl, mask).item(),
            "clip_frac": _masked_mean(is_clipped.to(mask.dtype), mask).item(),
            "dual_clip_frac": _masked_mean(is_dual.to(mask.dtype), mask).item(),
            "ratio": _masked_mean(ratio, mask).item(),
            "ratio_max": torch.where(mask > 0, ratio, torch.zeros_like(ratio)).max().item(),
            "adv": advantages.float().mean().item(),
        }
    return loss, stats


# ----------------------------------------------------------------------------- optimiser helpers


def cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_ratio: float = 0.03,
              min_lr_ratio: float = 0.0) -> float:
    """Learning rate for scheduler step `step` (0-based) of `total_steps`, as in verl.

    verl (and ttrv.adapt) steps the scheduler once per batch of prompts, not per AdamW update:
    every update of a batch uses the same lr and `total_steps` counts batches.
    W = int(warmup_ratio * total_steps) warmup steps (floored like the official code: 0.03 gives
    W = 0 below 34 steps, so step 0 already uses peak_lr). Then:
      step < W:  peak_lr * step / W                            (step 0 gets 0 when W > 0)
      step >= W: min + (peak - min) * (1 + cos(pi * (step - W) / (total_steps - W))) / 2
    with min = min_lr_ratio * peak_lr. Step W gets peak_lr; the cosine would reach min at
    step == total_steps, one past the last step taken, so the last step (total_steps - 1) still
    gets a small positive lr and no update is wasted.

    >>> [round(cosine_lr(s, 4, 1.0), 4) for s in range(4)]    # W = 0
    [1.0, 0.8536, 0.5, 0.1464]
    """
    warmup = int(warmup_ratio * total_steps)
    if step < warmup:
        return peak_lr * step / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    min_lr = min_lr_ratio * peak_lr
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write lr into every parameter group of the optimiser (AdamW)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Clip the global gradient L2 norm to max_norm (official: 1.0); returns the norm before."""
    return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))


# ----------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample(model, prompt_inputs: dict, *, temperature: float, top_p: float, max_new_tokens: int,
           eos_token_ids: list[int], pad_token_id: int, suppress_token_ids: list[int] = (),
           first_step_ids: list[int] | None = None):
    """Completions for already-repeated prompt rows, from ONE generate call: LongTensor [B, T].

    With `first_step_ids` it returns (completions, logits [B, K] of the FIRST step at those K
    token ids), kept by `_FirstStep` during the same generate call: eval.evaluate reads the
    option letters' logits there (letter-forced accuracy) without a second forward.

    Only the new tokens are returned (the P prompt columns are cut); each row is pad_token_id
    after its first end token; T <= max_new_tokens is the longest row. temperature == 0 is greedy
    (evaluation); otherwise multinomial sampling at `temperature` with nucleus `top_p`.

    Everything else that would change the sampling distribution is switched off explicitly:
    transformers 5 fills unset options with global defaults (top_k=50!) and hub checkpoints ship
    their own (Qwen's: repetition penalty, small top_k/top_p). With top_k=0 and no penalty the
    samples come from softmax(logits / temperature), the distribution completion_logprobs
    scores (the official code samples with vLLM, top_k=-1, top_p=1). `suppress_token_ids`
    (the image/video placeholders, vlm.placeholder_token_ids) are never drawn: a response
    holding one would be read as an image slot by the next forward.

    Around generate the model is put in eval mode with activation (gradient) checkpointing off,
    which in train mode makes the layers drop the KV cache; both are restored afterwards to
    exactly what they were, by saving and restoring each module's `gradient_checkpointing` flag
    (this keeps the original checkpoint function and every_n_layers, and avoids the deprecated
    gradient_checkpointing_enable/disable of transformers 5).
    """
    was_training = model.training
    flags = {m: m.gradient_checkpointing for m in model.modules()
             if hasattr(m, "gradient_checkpointing")}
    for m in flags:
        m.gradient_checkpointing = False
    model.eval()
    try:
        options = dict(do_sample=temperature > 0, repetition_penalty=1.0,
                       suppress_tokens=list(suppress_token_ids) or None)
        if temperature > 0:
            options.update(temperature=temperature, top_p=top_p, top_k=0)
        first = _FirstStep(first_step_ids) if first_step_ids is not None else None
        out = model.generate(**prompt_inputs, **options, max_new_tokens=max_new_tokens,
                             eos_token_id=list(eos_token_ids), pad_token_id=pad_token_id,
                             logits_processor=[first] if first else None,
                             use_cache=True)                                       # [B, P+T]
    finally:
        for m, flag in flags.items():
            m.gradient_checkpointing = flag
        model.train(was_training)
    completion = out[:, prompt_inputs["input_ids"].shape[1]:]                      # [B, T]
    keep = completion_mask(completion, eos_token_ids).bool()
    completion = torch.where(keep, completion, torch.full_like(completion, pad_token_id))
    return completion if first is None else (completion, first.logits)


class _FirstStep:
    """A generate logits processor that keeps the first step's logits at `ids` ([B, K], float32)
    and changes nothing. Only K columns of one step are kept, never [B, V] per step."""

    def __init__(self, ids):
        self.ids, self.logits = torch.as_tensor(list(ids), dtype=torch.long), None

    def __call__(self, input_ids, scores):                                          # [B, V]
        if self.logits is None:
            self.logits = scores[:, self.ids.to(scores.device)].float()             # [B, K]
        return scores
