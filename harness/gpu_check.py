"""The GPU check, `python bench.py --gpu-check`: the figures a first GPU run must give, in one command.

On one GPU (at most 8 minutes), on the real architectures at full size with random weights
(configs and processors from ../shared/fixtures; nothing is downloaded), through the loop's own
functions (precision.prepare, ttrv.adapt, eval.evaluate) and their defaults on a GPU (bf16 autocast,
fused AdamW, micro-batches of 8, gradient checkpointing):
  1. Qwen2.5-VL-3B full fine-tuning: peak GPU memory through the first batch of 4 prompts (its
     first AdamW step allocates the moments);
  2. the same run to its end: the 20-sample x 32-rollout x 2-epoch adaptation's wall time;
  3. greedy evaluation of 4,500 RESISC45-sized prompts (256x256 images) with that model;
  4. one batch of the 3B model with --lora-rank 16: peak memory and time;
  5. one batch of InternVL3-2B (vision tower frozen, the family's protocol): peak and time;
  6. bench.py's own figures on the tiny models: the text sampler's tokens/s against `generate`
     at 64 rollouts x 256 tokens, forced to full length and ending naturally (--text-sampler),
     and the tiny VLM's full step, shared-prefix against plain (`python bench.py`).
Random weights never choose an end token, so every response runs to its cap: SIZES caps a
rollout at 16 tokens and an evaluation answer at 4 (a multiple-choice answer is a letter and an
end token). What it leaves out: real weights and data, flash-attention, several GPUs.

    python bench.py --gpu-check --gpu-check-json gpu-check.json   # writes the JSON, prints the table
    python bench.py --gpu-check --dry-run    # the same code on the tiny models, CPU, seconds

--dry-run builds the tiny Qwen2.5-VL and InternVL (random weights) and runs every row at the
sizes of DRY under bf16 autocast on the CPU; its memory column is the process's peak RSS.
"""

import copy
import dataclasses
import datetime
import gc
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

import data
import eval as evaluation
import ttrv
import vlm
from harness import config, families, models, precision, resisc45, run

FIXTURES = Path(__file__).resolve().parent.parent / ".." / "shared" / "fixtures"
QWEN, INTERNVL = "qwen2.5-vl-3b-instruct", "internvl3-2b-hf"
SIZES = dict(samples=20, rollouts=32, epochs=2, prompts_per_step=4, response_tokens=16,
             eval_prompts=4500, eval_tokens=4, eval_batch=32, lora_rank=16,
             sampler=[64, 256], step=[4, 32, 4], repeats=3)   # step: prompts, rollouts, tokens
DRY = dict(samples=4, rollouts=4, epochs=2, prompts_per_step=2, response_tokens=3,
           eval_prompts=8, eval_tokens=2, eval_batch=4, lora_rank=16,
           sampler=[4, 8], step=[2, 4, 2], repeats=1)
RESISC_SIDE = 256                # RESISC45 images are 256x256
GOALS = {"peak": 70.0, "adapt": 60.0, "eval": 25.0, "lora_peak": 24.0}   # GB, s (issue 17)


def resisc_examples(n, size):
    """`n` RESISC45-style questions (data.make_choice_question over its 45 classes) on 45 random
    `size`-square images, reused in turn; no labels are read by the loop."""
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    from PIL import Image
    images = [Image.fromarray(torch.randint(0, 256, (size, size, 3), generator=gen).byte().numpy())
              for _ in range(45)]
    out = []
    for i in range(n):
        label = resisc45.RESISC45_CLASSES[i % 45]
        question, options, answer = data.make_choice_question(label, resisc45.RESISC45_CLASSES, rng)
        out.append(data.Example(f"check-{i}", question, options, answer, label, images[i % 45]))
    return out


def real_model(name, device):
    """The fixture's architecture at full size with random fp32 weights, built on `device`, and
    its real processor."""
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig
    src = FIXTURES / name
    if not src.is_dir():
        raise SystemExit(f"error: the GPU check reads {src}, which is absent; run it from a "
                         "checkout that has ../shared/fixtures.")
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(src))
    if (src / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(src)
    return model, families.set_tiling(vlm.load_processor(str(src)))


def tiny_model(arch, device):
    """A tiny random-weight model of `arch` (harness/tiny.py), built in a temporary directory."""
    from harness import tiny
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-{arch}-") as tmp:
        return models.load(str(tiny.build_tiny_model(tmp, arch=arch)), device, torch.float32,
                           allow_cpu=True)


class Meter:
    """Wall time and peak memory (GPU: allocated by torch; CPU: the process's peak RSS), GB."""

    def __init__(self, device):
        self.cuda = device == "cuda"

    def start(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()

    def seconds(self):
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - self.t0

    def peak_gb(self):
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 1e9
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6      # Linux: KB


def settings(sizes, device, **kw):
    """The run's Config at these sizes, with the GPU defaults the command line would fill in."""
    cfg = config.Config(device=device, precision="bf16" if device == "cpu" else "auto",
                        num_samples=sizes["samples"],
                        rollouts=sizes["rollouts"], epochs=sizes["epochs"],
                        prompts_per_step=sizes["prompts_per_step"],
                        max_new_tokens=sizes["response_tokens"], quiet=True, **kw)
    return dataclasses.replace(cfg, micro_batch=config.micro_batch_for(cfg))


def one_run(build, cfg, examples, meter):
    """precision.prepare + ttrv.adapt: {peak through batch 1 (GB), seconds of batch 1, of all}."""
    model, processor = build()
    policy, ref_model, autocast = precision.prepare(model, cfg, lambda: copy.deepcopy(model))
    out = {}

    def first(m, seen):
        if m["step"] == 1:
            out.update(peak_gb=meter.peak_gb(), first_batch_s=meter.seconds())
    meter.start()
    ttrv.adapt(ttrv.Setup(policy, ref_model, processor, autocast), examples, run.settings(cfg),
               on_step=first)
    out["adapt_s"] = meter.seconds()
    return out, (policy, processor, autocast)


def free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bench_rows(device, sizes) -> dict:
    """Row 6: bench.py's sampler and full-step figures (harness/bench_text.py, harness/bench.py)."""
    from harness import bench_step, bench_text
    from harness.bench_args import parse_args
    env = bench_text.text_env(torch.device(device))
    rates = bench_text.sampler_rates(env, *sizes["sampler"], sizes["repeats"])
    rows = {}
    for forced, name in ((True, "forced"), (False, "ending")):
        rows[f"sampler_{name}"] = rates["shared-prefix sampler", forced][0]
        rows[f"sampler_{name}_x"] = rows[f"sampler_{name}"] / rates["generate", forced][0]
    del env
    free()
    B, n, L = sizes["step"]
    args = parse_args(["--device", device, "--prompts", str(B), "--rollouts", str(n),
                       "--repeats", str(sizes["repeats"])])
    steps = bench_step.full_steps(bench_step.setup(args), args, L)
    rows["step_shared"] = steps["shared"]["step"]
    rows["step_x"] = steps["plain"]["step"] / steps["shared"]["step"]
    free()
    return rows


def measure(dry_run: bool) -> dict:
    """Every row of the check, as a JSON-ready dict."""
    device, sizes = ("cpu", DRY) if dry_run else ("cuda", SIZES)
    meter = Meter(device)
    build = {QWEN: (lambda: tiny_model("qwen2_5_vl", device)) if dry_run else
             (lambda: real_model(QWEN, device)),
             INTERNVL: (lambda: tiny_model("internvl", device)) if dry_run else
             (lambda: real_model(INTERNVL, device))}
    examples = resisc_examples(max(sizes["samples"], sizes["eval_prompts"]), RESISC_SIDE)
    rows = {}
    full, (policy, processor, autocast) = one_run(build[QWEN], settings(sizes, device),
                                                  examples[:sizes["samples"]], meter)
    rows["peak"], rows["adapt"] = full["peak_gb"], full["adapt_s"]
    meter.start()
    policy.eval()
    evaluation.evaluate(policy, processor, examples[:sizes["eval_prompts"]],
                        batch_size=sizes["eval_batch"], max_new_tokens=sizes["eval_tokens"],
                        autocast=autocast, progress=False)
    rows["eval"] = meter.seconds()
    del policy, processor, autocast
    free()
    one_batch = dict(samples=sizes["prompts_per_step"], epochs=1)
    lora, _ = one_run(build[QWEN], settings({**sizes, **one_batch}, device,
                                            lora_rank=sizes["lora_rank"]),
                      examples[:sizes["prompts_per_step"]], meter)
    rows["lora_peak"], rows["lora_s"] = lora["peak_gb"], lora["adapt_s"]
    free()
    internvl, _ = one_run(build[INTERNVL], settings({**sizes, **one_batch}, device),
                          examples[:sizes["prompts_per_step"]], meter)
    rows["internvl_peak"], rows["internvl_s"] = internvl["peak_gb"], internvl["adapt_s"]
    free()
    rows.update(bench_rows(device, sizes))
    return dict(date=datetime.date.today().isoformat(), dry_run=dry_run,
                device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                torch=torch.__version__, transformers=__import__("transformers").__version__,
                sizes=sizes, rows=rows, goals=GOALS)


ROWS = [  # (key, what, unit)
    ("peak", "3B full fine-tuning: peak memory through the first batch (first AdamW step)", "GB"),
    ("adapt", "3B: 20 samples x 32 rollouts x 2 epochs, adaptation wall time", "s"),
    ("eval", "3B: greedy evaluation of 4,500 RESISC45-sized prompts", "s"),
    ("lora_peak", "3B with --lora-rank 16: peak memory through one batch", "GB"),
    ("lora_s", "3B with --lora-rank 16: one batch", "s"),
    ("internvl_peak", "InternVL3-2B full fine-tuning: peak memory through one batch", "GB"),
    ("internvl_s", "InternVL3-2B: one batch", "s"),
    ("sampler_forced", "tiny text LM, shared-prefix sampler, forced to full length: tokens/s", "tok/s"),
    ("sampler_forced_x", "the same over `generate`'s tokens/s", "x"),
    ("sampler_ending", "tiny text LM, shared-prefix sampler, ending naturally: tokens/s", "tok/s"),
    ("sampler_ending_x", "the same over `generate`'s tokens/s", "x"),
    ("step_shared", "tiny VLM, shared-prefix full step", "s"),
    ("step_x", "the same, plain full step over shared-prefix", "x"),
]


def table(result: dict) -> str:
    """The Markdown table of docs/speed-and-memory.md ("GPU check") for one result."""
    dry = result["dry_run"]
    z = result["sizes"]
    lines = [f"GPU check, {result['date']}, {result['device']}, {result['total_s']:.0f} s in all"
             + (" (DRY RUN: tiny models, CPU, peak = process RSS; the goals do not apply)"
                if dry else ""),
             f"sizes: {z['samples']} samples x {z['rollouts']} rollouts x {z['epochs']} epochs, "
             f"{z['prompts_per_step']} prompts per batch, responses {z['response_tokens']} tokens;"
             f" evaluation {z['eval_prompts']} prompts in batches of {z['eval_batch']}, "
             f"{z['eval_tokens']} tokens; LoRA rank {z['lora_rank']}; sampler {z['sampler'][0]}"
             f" rollouts x {z['sampler'][1]} tokens; tiny VLM step {z['step'][0]} prompts x "
             f"{z['step'][1]} rollouts x {z['step'][2]} tokens; best of {z['repeats']}",
             "", "| what | measured | goal |", "|---|---:|---:|"]
    for key, what, unit in ROWS:
        goal = result["goals"].get(key)
        verdict = "" if goal is None else (f"<= {goal:g} {unit}" + (
            "" if dry else (" met" if result["rows"][key] <= goal else " NOT met")))
        lines.append(f"| {what} | {result['rows'][key]:.2f} {unit} | {verdict} |")
    return "\n".join(lines)


def main(dry_run: bool = False, json_path=None) -> int:
    if not dry_run and not torch.cuda.is_available():
        print("error: --gpu-check needs a CUDA GPU (torch sees none); pass --dry-run to run the "
              "same code on the tiny models on the CPU.", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    result = measure(dry_run)
    result["total_s"] = time.perf_counter() - t0
    text = table(result)
    result["table"] = text
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    print(text)
    return 0
