"""python bench.py: numbers, not impressions. Every phase of a TTRV step, shared-prefix vs plain.

    python bench.py                                     # tiny model, CPU, N=32, 4 prompts
    python bench.py --response-len 4 32 --markdown      # two tables, Markdown
    python bench.py --arch qwen2.5-vl-3b --device cuda  # the real 3B architecture, random weights
    python bench.py --arch qwen2.5-vl-3b --device meta  # build it on the meta device, count params

What it measures, per step of B prompts x N rollouts, for the shared-prefix path
(shared_prefix.py) and the plain path (rollout.py, N copies of each prompt), through the loop's
own calls: (1) `sampler.sample` (both record the old-policy log-probs as they sample); then per prompt (one AdamW update per prompt): (2) `ttrv.experience`, the
reference log-probs under no_grad; (3) `ttrv.update`: policy forward + GRPO loss + backward,
gradient checkpointing on (non-reentrant), grad-norm clip; (4) its AdamW step, timed apart;
(5) greedy evaluation throughput (images/s) on batches of --eval-batch prompts: plain =
eval.generate (HF generate, what eval.py runs), shared = shared_prefix.sample with n=1 (at n=1
nothing is shared: that row compares the two decoders); and the preprocessing throughput of
the eval inputs on the CPU (tiny: the processor, text + image; 3B: the Qwen2-VL image processor
only).
Peak memory: torch.cuda.max_memory_allocated on GPU; on CPU the process's peak RSS (whole run,
both paths, from resource.getrusage). Times: one warm-up step, then --repeats steps, the two
paths taking turns; the repeat with the shortest full step is reported (best of k). CUDA is
synchronised around every phase.

Precision as in ttrv.py: GPU = fp32 master weights + bf16 autocast, the reference stored as
autocast computes (precision.frozen_reference), fp32 AdamW states (fused); CPU = fp32 everywhere.
The response length is forced: every end token (and every other special token) is suppressed,
so each rollout has exactly L tokens.
The models and their inputs per --arch, and the meta-device parameter counts, are in
harness/bench_models.py; the step itself is harness/bench_step.py; --logprob-memory is
harness/bench_logprob.py; the flags and their checks (before any model) are harness/bench_args.py.

What it does not measure: rewards/answer parsing (no model calls), data loading from disk, vLLM,
multi-GPU, real weights (random weights: only shapes and lengths matter for speed), flash-attention
(sdpa is used). The 60 s goals are checked against a projection from the measured phases, not
against a timed end-to-end run.
"""
import sys
import time

import torch

import eval as evaluation
import shared_prefix
from harness import bench_logprob, bench_models
from harness.bench_args import parse_args
from harness.bench_step import PHASES, clock, full_steps, peak_gb, setup

PROTOCOL = dict(groups=40, rollouts=32, questions=4500)  # 20 samples x 2 epochs; RESISC45 test
GOALS = dict(ttrv_s=60.0, eval_s=60.0, peak_gb=70.0, cpu_speedup=5.0)


def eval_seconds(env, shared, L):
    """Seconds for a greedy, forced-length decode of every eval batch."""
    t = {}
    env.policy.eval()
    opts = dict(temperature=0.0, top_p=1.0, max_new_tokens=L, eos_token_ids=env.end_ids,
                pad_token_id=env.pad_id, suppress_token_ids=env.suppress)
    with clock(t, "eval", env.device):
        for batch in env.eval_inputs:
            with env.autocast:
                if shared:
                    shared_prefix.sample(env.policy, batch, 1, **opts)
                else:
                    evaluation.generate(env.policy, batch, **opts)
    env.policy.train()
    return t["eval"]


def measure(env, args, L):
    """{path: {phase: s, "step": s, "eval img/s": x, memory...}} for shared and plain."""
    results = full_steps(env, args, L)
    for path, r in results.items():
        peak_gb(env, reset=True)
        eval_s = min([eval_seconds(env, path == "shared", L) for _ in range(1 + args.repeats)][1:])
        r.update(eval_ips=args.eval_images / eval_s, eval_peak=peak_gb(env))
    times = []
    for _ in range(1 + args.repeats):
        t0 = time.perf_counter()
        for lo in range(0, args.eval_images, args.eval_batch):
            env.preprocess(lo, min(lo + args.eval_batch, args.eval_images))
        times.append(time.perf_counter() - t0)
    results["preprocess_ips"] = args.eval_images / min(times[1:])
    return results


def report(env, args, L, res):
    """The table, the projection and the goals, as printed lines."""
    s, p, cuda = res["shared"], res["plain"], env.device.type == "cuda"
    ratio = lambda a, b: f"{a / b:.2f}x" if a > 0 and b > 0 else "-"
    row = lambda name, a, b, r, f="{:.1f}": (name, f.format(a), f.format(b), r)
    rows = [row(k, 1e3 * s[k], 1e3 * p[k], ratio(p[k], s[k])) for k in PHASES + ["step"]]
    rows[-1] = ("full step (sum)",) + rows[-1][1:]
    rows.append(row("eval greedy decode, img/s", s["eval_ips"], p["eval_ips"],
                    ratio(s["eval_ips"], p["eval_ips"])))
    rows.append(row("eval preprocessing (CPU), img/s", res["preprocess_ips"],
                    res["preprocess_ips"], "-"))
    if cuda:
        for k, name in (("step_peak", "step"), ("eval_peak", "eval")):
            rows.append(row(f"peak GPU memory, {name} (GB)", s[k], p[k], ratio(p[k], s[k]),
                            "{:.2f}"))
    else:
        rss = max(s["eval_peak"], p["eval_peak"])
        rows.append(row("peak RSS, whole process (GB)", rss, rss, "-", "{:.2f}"))
    head = ("phase (ms per step)", "shared-prefix", "plain", "plain/shared")
    lines = [f"{env.what} on {args.device}, {env.precision}, {torch.get_num_threads()} threads; "
             f"step = {args.prompts} prompts x {args.rollouts} rollouts, response {L} tokens "
             f"(forced), prompt {env.prompt_tokens} tokens; eval {args.eval_images} images in "
             f"batches of {args.eval_batch}; best of {args.repeats} after 1 warm-up"]
    if args.markdown:
        lines += ["", "| " + " | ".join(head) + " |", "|---|---:|---:|---:|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                            enumerate(zip(r, (33, 13, 12, 12)))) for r in [head] + rows]
    lines.append("plain/shared: plain time / shared time (img/s: shared / plain; memory: plain / "
                 "shared); above 1 = shared-prefix better.")
    groups, q = PROTOCOL["groups"], PROTOCOL["questions"]
    ttrv_s = {k: res[k]["step"] / args.prompts * groups for k in ("shared", "plain")}
    eval_s = {k: q / res[k]["eval_ips"] for k in ("shared", "plain")}
    pre_s = q / res["preprocess_ips"]
    lines += ["", f"PROJECTION from the measured phases (not a timed run), N = {args.rollouts}:",
              f"  TTRV, 20 samples x 2 epochs = {groups} groups (step / {args.prompts} x {groups}):"
              f" shared {ttrv_s['shared']:.1f} s, plain {ttrv_s['plain']:.1f} s",
              f"  greedy eval of {q:,} questions: decode shared {eval_s['shared']:.1f} s, plain "
              f"(eval.py's) {eval_s['plain']:.1f} s; + serial preprocessing {pre_s:.1f} s",
              "GOALS:"]
    n32 = args.rollouts == PROTOCOL["rollouts"]
    on_gpu = args.arch == "qwen2.5-vl-3b" and cuda and n32
    on_cpu = args.arch == "tiny" and not cuda and n32
    goals = [
        ("3B, 1 GPU", on_gpu, f"TTRV <= {GOALS['ttrv_s']:.0f} s, shared path",
         ttrv_s["shared"], GOALS["ttrv_s"], "s"),
        ("3B, 1 GPU", on_gpu, f"eval <= {GOALS['eval_s']:.0f} s, plain decode + preprocessing",
         eval_s["plain"] + pre_s, GOALS["eval_s"], "s"),
        ("3B, 1 GPU", on_gpu, f"peak <= {GOALS['peak_gb']:.0f} GB, shared step",
         s["step_peak"], GOALS["peak_gb"], "GB"),
        ("tiny, CPU", on_cpu, f"shared step >= {GOALS['cpu_speedup']:.0f}x faster than plain",
         -p["step"] / s["step"], -GOALS["cpu_speedup"], "x")]
    for where, applies, text, value, limit, unit in goals:
        verdict = ("MET" if value <= limit else "NOT MET") if applies else "not checked here"
        shown = f"{abs(value):.2f} {unit}" if applies else "needs this setting, N = 32"
        lines.append(f"  [{where}] {text}: {shown} -> {verdict}")
    return lines


def main(argv=None) -> int:
    """Every flag checked first (harness/bench_args.py: exit code 2, one sentence), then one mode."""
    args = parse_args(argv)
    if args.gpu_check:
        from harness import gpu_check
        return gpu_check.main(args.dry_run, args.gpu_check_json)
    if args.logprob_memory:
        print("\n".join(bench_logprob.logprob_memory(args)))
        return 0
    if args.text_sampler:
        from harness import bench_text
        print("\n".join(bench_text.report(args)))
        return 0
    if args.device == "meta":
        if args.arch == "qwen2.5-vl-3b":
            bench_models.count_3b()
        else:
            bench_models.count_internvl(args.arch)
        return 0
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        torch.manual_seed(0)
        env = setup(args)
        for L in args.response_len:
            print("\n".join(report(env, args, L, measure(env, args, L))) + "\n", flush=True)
    finally:
        torch.set_num_threads(threads)
    return 0

