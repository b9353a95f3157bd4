"""GRPO's tensor maths, as TTRV uses it: advantages, masks, token log-probs, the loss, the schedule.

Pure torch (no transformers, no model): every function takes tensors and returns tensors, in
the order a training step uses them (ttrv.adapt):

    A      = group_advantages(rewards)                              # [B, N]    eq. (2)
    mask   = completion_mask(ids, eos_token_ids)                    # [B*N, T]
    logp   = token_logprobs(head, hidden, ids, temperature)         # [R, T]    chunked head
    order  = by_length(mask); length_chunks(mask[order], size)      # micro-batches, trimmed
    loss, stats = grpo_loss(logp, old_logp, ref_logp, A, mask)      # eq. (1): clip + KL
    optimizer = adamw(params, lr, weight_decay)                     # fused on CUDA
    set_lr(optimizer, cosine_lr(batch, batches, peak_lr)); loss.backward(); clip_grad_norm

Conventions follow the paper's official code (a verl fork): clip 0.2 both sides, dual clip 3.0,
k3 ("low_var_kl") KL to the reference with beta 0.001, token-mean aggregation, cosine lr stepped
once per batch of prompts. One difference by default: the advantage std is the population std
(ddof=0); the official code's torch.std is unbiased (ddof=1, `--protocol official`).

What it leaves out: rewards (rewards.py), sampling and the model forwards that produce the
log-probs (rollout.py, the plain N copies; shared_prefix.py, the speed-up), the loop (ttrv.py).
"""
from __future__ import annotations

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


# Tokens whose logits exist at once while scoring responses: a memory/speed knob, not a
# hyperparameter (the result does not depend on it). One chunk's fp32 log-softmax is
# chunk x V x 4 bytes (0.16 GB at V = 151,936); `python bench.py --logprob-memory` measures it.
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
    "ratio", "ratio_max", "ratio_dev" (largest |ratio - 1|; over masked tokens), "adv" (mean
    advantage per sequence).
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
            "ratio_dev": torch.where(mask > 0, (ratio - 1).abs(), torch.zeros_like(ratio)).max().item(),
            "adv": advantages.float().mean().item(),
        }
    return loss, stats


# ----------------------------------------------------------------------------- micro-batches


def by_length(mask: torch.Tensor) -> torch.Tensor:
    """Row order longest response first (stable): [R] indices, mask [R, T].

    Sorting a group before cutting it into micro-batches puts rows of like length together, so
    each chunk, trimmed to its own longest row (length_chunks), carries little padding.
    """
    return mask.sum(1).argsort(descending=True, stable=True)


def length_chunks(mask: torch.Tensor, size: int | None = None) -> list[tuple[slice, int]]:
    """The micro-batches of a group: (rows, T_c) for each run of `size` consecutive rows (None:
    all rows at once), T_c the chunk's own longest row (its last column holding a 1).

    Columns past T_c are padding for every row of the chunk, and every log-prob is causal, so
    dropping them changes no loss term (grpo_loss's dr_grpo still divides by the group's T).

    >>> length_chunks(torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]), 2)
    [(slice(0, 2, None), 3), (slice(2, 3, None), 1)]
    """
    rows = mask.shape[0]
    size = size or rows
    out = []
    for c in range(0, rows, size):
        used = mask[c:c + size].sum(0).nonzero()                       # columns with a 1
        out.append((slice(c, min(c + size, rows)), int(used.max()) + 1 if len(used) else 1))
    return out


# ----------------------------------------------------------------------------- optimiser helpers


def _on_cuda(p: torch.Tensor) -> bool:
    return p.device.type == "cuda"


def adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The loop's AdamW (betas 0.9, 0.999 as verl); the fused kernel when every parameter is on CUDA.

    On CUDA torch otherwise picks its foreach kernel, whose step() takes `_foreach_sqrt` of the
    second moments: a temporary fp32 copy the size of all trained parameters (15 GB for the 3B
    model), at the moment grads and both moments are already held. The fused kernel updates in
    place. Elsewhere (CPU, meta) torch's default stays.
    """
    params = list(params)
    fused = bool(params) and all(_on_cuda(p) for p in params)
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay,
                             fused=True if fused else None)



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
