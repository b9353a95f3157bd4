"""The plain N-copies path (--no-shared-prefix): the reference the fast path is tested against.

Every public VLM GRPO implementation samples and scores this way: each prompt (its image and
text) is repeated N times, transformers' `generate` draws the N responses, and a second forward
over the N concatenated [prompt | response] sequences gives the log-probs. rollout.py computes
the same numbers with the prompt read once per group; tests/test_shared_prefix.py checks that
the two agree. It offers the loop the same two calls as rollout.py:

    roll = sample(model, prompt_inputs, n, temperature=..., ...)   # Rollouts [B*n, T]
    logp = logprobs(model, one_prompt, ids, mask, temperature)     # [n, T]

What it leaves out: token entropies (Rollouts.entropies is None, so --reward dare needs the
shared-prefix path) and, under torchrun, keeping the processes' decode steps in step.
"""
import inspect

import torch

import eval as evaluation
import grpo
import rollout
import vlm


def sample(model, prompt_inputs, n, *, temperature, top_p, max_new_tokens, eos_token_ids,
           pad_token_id, suppress_token_ids=(), any_alive=None):
    """n responses per prompt by one generate call over the repeated prompts -> Rollouts."""
    repeated = vlm.repeat_inputs(prompt_inputs, n)                    # [B*n, P]
    ids = evaluation.generate(model, repeated, temperature=temperature, top_p=top_p,
                              max_new_tokens=max_new_tokens, eos_token_ids=eos_token_ids,
                              pad_token_id=pad_token_id, suppress_token_ids=suppress_token_ids)
    mask = grpo.completion_mask(ids, eos_token_ids)                   # [B*n, T]
    with torch.no_grad():  # old-policy log-probs: a second forward the shared path avoids
        logp = completion_logprobs(model, repeated, ids, mask, temperature)
    return rollout.Rollouts(ids, logp, None, mask)


def logprobs(model, one_prompt, ids, mask, temperature=1.0):
    """log pi_T of one prompt's responses ids [n, T] over n copies of the prompt: [n, T]."""
    return completion_logprobs(model, vlm.repeat_inputs(one_prompt, ids.shape[0]), ids, mask,
                               temperature)


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


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
    the hidden states in chunks (`rollout.scored_forward`, `grpo.token_logprobs`), never as [B, T, V]. The
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
    return rollout.scored_forward(model, completion_ids, temperature, skip_last=True, use_cache=False,
                          **inputs)                                                  # [B, T]
