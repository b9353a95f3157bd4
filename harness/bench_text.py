"""bench.py --text-sampler: the text sampler beside transformers' generate, on a tiny text LM.

    python bench.py --text-sampler                  # CPU, 2 threads, best of --repeats
    python bench.py --text-sampler --device cuda --markdown

Two measurements on a tiny Qwen2 causal LM (random weights, the tiny VLM's text sizes), one
prompt of PROMPT_TOKENS tokens:
  1. tokens per second at 64 rollouts x 256 tokens: `shared_prefix.sample` (tokens and
     log-probs, one prompt read once; no per-token statistics, as the loop asks for none unless a
     reward reads them), `eval.generate` (transformers' generate over the 64 repeated prompts;
     tokens only) and `rollout.sample` (the hand-written loop over the 64 repeated prompts,
     tokens and log-probs: the loop's --no-shared-prefix sampler).
     Forced: every end token suppressed, each row exactly 256 tokens. Ending: END_IDS (5 of the
     512 tokens) end a row, so rows stop at spread lengths; generate and the plain sampler run
     every row until the last one ends, the shared sampler drops rows that ended. Tokens =
     tokens of the responses up to and including their end.
  2. one GRPO step's seconds for N rollouts x T forced tokens on both paths, through the loop's
     own calls: sampler.sample, ttrv.experience (reference log-probs), ttrv.update (policy
     forward + backward with non-reentrant checkpointing, AdamW).
Each figure is the best (shortest) of --repeats timed runs after one warm-up. On CPU: fp32; on
CUDA: bf16 autocast as ttrv.py, CUDA synchronised around each run.
What it leaves out: real weights (only shapes and lengths matter for speed), real prompts, the
reward and the vote (microseconds).
"""
from __future__ import annotations

import copy
import functools
import platform
import time
from types import SimpleNamespace

import torch

import eval as evaluation
import grpo
import rollout
import shared_prefix
import ttrv
import vlm
from harness.tiny import TEXT, VOCAB_SIZE

PROMPT_TOKENS = 64
END_IDS = [0, 1, 2, 3, 4]         # "ending" mode's end tokens (0 is also the pad)
SAMPLER_SHAPE = (64, 256)         # rollouts x tokens of the tokens/s figure
ROLLOUTS, LENGTHS = [8, 16, 32, 64], [4, 16, 64, 256]   # the step table's N and T


def build_lm(device):
    """The tiny text LM: Qwen2ForCausalLM with TEXT's sizes and VOCAB_SIZE, seed 0."""
    from transformers import AutoModelForCausalLM, Qwen2Config
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB_SIZE, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                         **TEXT)
    return AutoModelForCausalLM.from_config(config).to(device)


def machine(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        name = platform.processor() or "CPU"
    return f"{name}, {torch.get_num_threads()} torch threads"


def best_seconds(calls: dict, repeats: int, device) -> dict:
    """name -> (shortest of `repeats` timed calls after one warm-up, the last call's result);
    the calls take turns, so a change in the machine's load reaches them all alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = {name: [float("inf"), call()] for name, call in calls.items()}
    for _ in range(repeats):
        for name, call in calls.items():
            sync()
            t0 = time.perf_counter()
            out[name][1] = call()
            sync()
            out[name][0] = min(out[name][0], time.perf_counter() - t0)
    return {name: tuple(v) for name, v in out.items()}


def sampler_calls(env, n: int, T: int, forced: bool) -> dict:
    """name -> a call returning the response mask [n, <=T] of one sampler on env's prompt."""
    ends = END_IDS
    suppress = END_IDS if forced else []
    opts = dict(temperature=1.0, top_p=1.0, max_new_tokens=T, eos_token_ids=ends,
                pad_token_id=0, suppress_token_ids=suppress)
    repeated = vlm.repeat_inputs(env.prompt, n)

    def shared():
        return shared_prefix.sample(env.model, env.prompt, n, **opts).mask

    def generate():
        ids = evaluation.generate(env.model, repeated, **opts)
        return grpo.completion_mask(ids, ends)

    def plain_sample():
        return rollout.sample(env.model, env.prompt, n, **opts).mask
    return {"shared-prefix sampler": shared, "generate": generate, "plain sampler": plain_sample}


def sampler_rates(env, n: int, T: int, repeats: int) -> dict:
    """(sampler name, forced) -> (tokens/s, mean response length), best of `repeats`."""
    rates = {}
    for forced in (True, False):
        with env.autocast:
            timed = best_seconds(sampler_calls(env, n, T, forced), repeats, env.device)
        for name, (seconds, mask) in timed.items():
            rates[name, forced] = (float(mask.sum()) / seconds, float(mask.sum()) / n)
    return rates


def tokens_per_second(env, args) -> list[str]:
    n, T = SAMPLER_SHAPE
    lines = [f"Sampler tokens/s, {n} rollouts x {T} tokens, one prompt of {PROMPT_TOKENS} "
             "tokens:", "", "| sampler | forced: tokens/s | x generate | ending: tokens/s | "
             "x generate | ending: mean length |", "|---|---|---|---|---|---|"]
    rates = sampler_rates(env, n, T, args.repeats)
    for name in ("shared-prefix sampler", "generate", "plain sampler"):
        f, e = rates[name, True], rates[name, False]
        lines.append(f"| {name} | {f[0]:,.0f} | {f[0] / rates['generate', True][0]:.2f} | "
                     f"{e[0]:,.0f} | {e[0] / rates['generate', False][0]:.2f} | {e[1]:.0f} |")
    return lines


def step_seconds(env, shared: bool, n: int, T: int) -> float:
    """One GRPO step (sample, reference log-probs, update) of one prompt, n x T forced tokens."""
    sampler = shared_prefix if shared else rollout
    hp = ttrv.Settings(temperature=1.0, beta=0.001, micro_batch=None, clip_eps=0.2,
                       dual_clip=3.0, loss_agg="token_mean", max_grad_norm=1.0)
    s = ttrv.Setup(env.model, env.ref, None, env.autocast, sampler)
    with env.autocast:
        roll = sampler.sample(env.model, env.prompt, n, temperature=1.0, top_p=1.0,
                              max_new_tokens=T, eos_token_ids=END_IDS, pad_token_id=0,
                              suppress_token_ids=END_IDS)
    advantages = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(env.device)
    group = ttrv.experience(s, rollout.Experience(env.prompt, roll.completion_ids,
                                                  roll.mask.float(), roll.logprobs, None,
                                                  advantages), hp)
    ttrv.update(s, env.optimizer, [group], hp)
    return float(roll.mask.sum())


def step_table(env, args) -> list[str]:
    lines = ["One GRPO step (seconds, best of repeats), one prompt, N rollouts x T forced "
             "tokens; shared-prefix / plain, and plain's time over shared's:", "",
             "| N \\ T | " + " | ".join(str(T) for T in LENGTHS) + " |",
             "|---|" + "---|" * len(LENGTHS)]
    for n in ROLLOUTS:
        cells = []
        for T in LENGTHS:
            s = {k: v[0] for k, v in best_seconds(
                {shared: functools.partial(step_seconds, env, shared, n, T)
                 for shared in (True, False)}, args.repeats, env.device).items()}
            cells.append(f"{s[True]:.3f} / {s[False]:.3f} ({s[False] / s[True]:.1f}x)")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def text_env(device):
    """The tiny text LM in train mode with checkpointing (as the loop holds it), its frozen
    reference, AdamW and the one prompt: what both measurements read."""
    model = build_lm(device)
    bf16 = device.type == "cuda"
    ref = copy.deepcopy(model).to(torch.bfloat16 if bf16 else torch.float32)
    ref.eval().requires_grad_(False)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    ids = torch.randint(5, VOCAB_SIZE, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
    return SimpleNamespace(
        device=device, model=model, ref=ref, params=params,
        optimizer=torch.optim.AdamW(params, lr=5e-7, weight_decay=0.01),
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
        prompt={"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)})


def report(args) -> list[str]:
    """Both measurements as Markdown lines (bench.py --text-sampler)."""
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        env = text_env(device)
        head = [f"Tiny text LM (Qwen2, {sum(p.numel() for p in env.params):,} parameters, random "
                f"weights), {device.type}: {machine(device)}; best of {args.repeats}.", ""]
        return head + tokens_per_second(env, args) + [""] + step_table(env, args)
    finally:
        torch.set_num_threads(threads)
