"""bench.py's full step: one TTRV step of B prompts x N rollouts through the loop's own calls,
timed by phase, shared-prefix and plain in turns (harness/bench.py prints it; the GPU check,
harness/gpu_check.py, carries its figure).

    env = setup(args)                        # policy, reference, AdamW, prompts (bench_models)
    best = full_steps(env, args, L)          # {"shared"/"plain": {phase: s, "step": s, ...}}
"""
import copy
import resource
import time
from contextlib import contextmanager
from types import SimpleNamespace

import torch

import grpo
import rollout
import shared_prefix
import ttrv
import vlm
from harness import bench_models, precision

PHASES = ["sampling", "reference log-probs", "policy forward+backward", "AdamW step"]


@contextmanager
def clock(times, key, device):
    """Add the wall time of the with-block to times[key], CUDA synchronised on both ends."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    yield
    sync()
    times[key] = times.get(key, 0.0) + time.perf_counter() - t0


def setup(args):
    """Policy (fp32, train mode, checkpointing), frozen reference, AdamW, prompts, eval batches."""
    device = torch.device(args.device)
    arch = bench_models.build(args, device)
    policy = arch.policy
    bf16 = device.type == "cuda"
    ref = precision.frozen_reference(copy.deepcopy(policy),
                                     torch.bfloat16 if bf16 else None)  # as harness/run.py
    policy.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad]
    return SimpleNamespace(
        device=device, policy=policy, ref=ref, params=params, what=arch.what,
        optimizer=grpo.adamw(params, 5e-7, 0.01),     # the loop's AdamW: fused on CUDA
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
        precision="fp32 master + bf16 autocast" if bf16 else "fp32",
        prompts=vlm.to_device(arch.prompts, device), preprocess=arch.preprocess,
        eval_inputs=[vlm.to_device(b, device) for b in arch.eval_inputs],
        end_ids=arch.end_ids, pad_id=arch.pad_id,
        suppress=sorted(set(arch.special) | set(arch.end_ids)),
        prompt_tokens=arch.prompts["input_ids"].shape[1])


def ttrv_step(env, shared, L, n, advantages):
    """One step through the loop's own calls (the sampler, ttrv.experience, ttrv.update);
    returns seconds per phase."""
    t, dev = {}, env.device
    sampler = shared_prefix if shared else rollout
    hp = ttrv.Settings(temperature=1.0, beta=0.001, micro_batch=None, clip_eps=0.2,
                       dual_clip=3.0, loss_agg="token_mean", max_grad_norm=1.0)
    s = ttrv.Setup(env.policy, env.ref, None, env.autocast, sampler)
    opts = dict(temperature=1.0, top_p=1.0, max_new_tokens=L, eos_token_ids=env.end_ids,
                pad_token_id=env.pad_id, suppress_token_ids=env.suppress)
    with clock(t, "sampling", dev), env.autocast:
        roll = sampler.sample(env.policy, env.prompts, n, **opts)
    ids, mask = roll.completion_ids, roll.mask.float()
    if ids.shape[1] != L or not bool(mask.all()):
        raise RuntimeError(f"response length not forced: got {ids.shape[1]} tokens, expected {L}")
    step = env.optimizer.step

    def timed_step(*a, **kw):                  # the AdamW step inside ttrv.update, timed apart
        with clock(t, "AdamW step", dev):
            return step(*a, **kw)
    env.optimizer.step = timed_step
    try:
        for b, one in enumerate(vlm.split_inputs(env.prompts)):
            rows = slice(b * n, (b + 1) * n)
            with clock(t, "reference log-probs", dev):
                group = ttrv.experience(s, rollout.Experience(
                    one, ids[rows], mask[rows], roll.logprobs[rows], None, advantages[b]), hp)
            with clock(t, "update", dev):
                ttrv.update(s, env.optimizer, [group], hp)
    finally:
        del env.optimizer.step
    t["policy forward+backward"] = t.pop("update") - t["AdamW step"]
    return {k: t.get(k, 0.0) for k in PHASES}


def peak_gb(env, reset=False):
    """GPU: peak allocated since the last reset; CPU: the process's peak RSS (Linux: KB)."""
    if env.device.type != "cuda":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if reset:
        torch.cuda.reset_peak_memory_stats(env.device)
    return torch.cuda.max_memory_allocated(env.device) / 1e9


def full_steps(env, args, L):
    """{path: {phase: s, "step": s, "step_peak": memory}} of the best of --repeats full steps
    after one warm-up each, the two paths taking turns (a change in the machine's load reaches
    both alike); the peak is the highest over the path's steps."""
    n, runs, peaks = args.rollouts, {"shared": [], "plain": []}, {"shared": 0.0, "plain": 0.0}
    advantages = torch.randn(args.prompts, n, generator=torch.Generator().manual_seed(0))
    for _ in range(1 + args.repeats):
        for path in runs:
            peak_gb(env, reset=True)
            runs[path].append(ttrv_step(env, path == "shared", L, n, advantages.to(env.device)))
            peaks[path] = max(peaks[path], peak_gb(env))
    best = {path: min(r[1:], key=lambda x: sum(x.values())) for path, r in runs.items()}
    return {path: dict(b, step=sum(b.values()), step_peak=peaks[path]) for path, b in best.items()}
