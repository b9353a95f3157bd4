"""bench.py: numbers, not impressions. Times every phase of a TTRV step, shared-prefix vs plain.

    python bench.py                                     # tiny model, CPU, N=32, 4 prompts
    python bench.py --response-len 4 32 --markdown      # two tables, Markdown
    python bench.py --arch qwen2.5-vl-3b --device cuda  # the real 3B architecture, random weights
    python bench.py --arch qwen2.5-vl-3b --device meta  # build it on the meta device, count params

What it measures, per step of B prompts x N rollouts, for the shared-prefix path (rollout.py)
and the plain path (harness/plain.py), through the loop's own calls: (1) `sampler.sample`
(plain: generate, then the old-policy log-probs in a second no-grad forward; the shared sampler
returns them); then per prompt (one AdamW update per prompt): (2) `ttrv.experience`, the
reference log-probs under no_grad; (3) `ttrv.update`: policy forward + GRPO loss + backward,
gradient checkpointing on (non-reentrant), grad-norm clip; (4) its AdamW step, timed apart;
(5) greedy evaluation throughput (images/s) on batches of --eval-batch prompts: plain =
eval.generate (HF generate, what eval.py runs), shared = rollout.sample with n=1 (at n=1
nothing is shared: that row compares the two decoders); and the preprocessing throughput of the eval inputs on the CPU
(tiny: the processor, text + image; 3B: the Qwen2-VL image processor only).
Peak memory: torch.cuda.max_memory_allocated on GPU; on CPU the process's peak RSS (whole run,
both paths, from resource.getrusage). Times: one warm-up step, then --repeats steps; the repeat
with the shortest full step is reported (best of k). CUDA is synchronised around every phase.

Precision as in ttrv.py: GPU = fp32 master weights + bf16 autocast, a bf16 reference copy, fp32
AdamW states; CPU = fp32 everywhere. The response length is forced: every end token (and every
other special token) is suppressed, so each rollout has exactly L tokens.
Inputs: tiny = shapes test images (112x112 -> 16 image tokens) through the tiny processor; 3B =
tensors built directly (no Qwen tokenizer offline): a RESISC45-sized prompt of PROMPT_TOKENS
tokens holding 81 image tokens, pixel_values from the Qwen2-VL image processor on a random
256x256 image (-> 252x252, grid [1, 18, 18], 324 patch rows of 1176).

What it does not measure: rewards/answer parsing (microseconds), data loading from disk, vLLM,
multi-GPU, real weights (random weights: only shapes and lengths matter for speed), flash-attention
(sdpa is used). The 60 s goals are checked against a projection from the measured phases, not
against a timed end-to-end run.
"""
import argparse
import copy
import random
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import torch

import data
import eval as evaluation
import grpo
from harness import presets
import rollout
from harness import plain, resisc45
import ttrv
import vlm

# Qwen/Qwen2.5-VL-3B-Instruct config.json, written out (random weights, nothing downloaded).
QWEN3B_TEXT = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                   num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                   hidden_act="silu", max_position_embeddings=128000, rms_norm_eps=1e-6,
                   bos_token_id=151643, eos_token_id=151645,
                   rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                    "mrope_section": [16, 24, 24]})
QWEN3B_VISION = dict(depth=32, hidden_size=1280, hidden_act="silu", intermediate_size=3420,
                     num_heads=16, in_channels=3, out_hidden_size=2048, patch_size=14,
                     spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                     fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
QWEN3B_IDS = dict(end=[151643, 151645], pad=151643, im_start=151644, vision_start=151652,
                  vision_end=151653, image=151655, first_special=151643)
PARAMS_PUBLISHED = 3_754_622_976   # the checkpoint's count as published (MTEB model metadata)
PARAMS_NOTES = 3_756_466_176       # paper-notes section 7
RESISC_IMAGE = 256                 # RESISC45 images are 256x256 -> 81 image tokens
PROMPT_TOKENS = 190                # estimate, used only without ../shared/fixtures (real: 166-172)
FIXTURES = Path(__file__).resolve().parent / ".." / "shared" / "fixtures"   # real files, no weights
# InternVL3-8B: InternViT-300M-448px (as in the 2B) + a Qwen2.5-7B text model, values as written
# in OpenGVLab/InternVL3-8B(-hf)'s config.json (from memory of the published file; not checked
# against a copy here, so the count below is "as configured", not "as published").
INTERNVL3_8B_TEXT = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, vocab_size=151674)
PROTOCOL = dict(groups=40, rollouts=32, questions=4500)  # 20 samples x 2 epochs; RESISC45 test
GOALS = dict(ttrv_s=60.0, eval_s=60.0, peak_gb=70.0, cpu_speedup=5.0)
PHASES = ["sampling", "reference log-probs", "policy forward+backward", "AdamW step"]


def qwen25_vl_3b(device):
    """Qwen2_5_VLForConditionalGeneration, 3B architecture, random fp32 init, built on `device`."""
    import transformers as tf
    config = tf.Qwen2_5_VLConfig(text_config=QWEN3B_TEXT, vision_config=QWEN3B_VISION,
                                 image_token_id=QWEN3B_IDS["image"], video_token_id=151656,
                                 vision_start_token_id=QWEN3B_IDS["vision_start"],
                                 vision_end_token_id=QWEN3B_IDS["vision_end"],
                                 tie_word_embeddings=True)
    with torch.device(device):
        return tf.Qwen2_5_VLForConditionalGeneration(config)


def count_3b():
    """Build the 3B model on the meta device; print its parameter count and static memory."""
    model = qwen25_vl_3b("meta")
    n = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.visual.parameters())
    print(f"Qwen2.5-VL-3B architecture (meta device): {n:,} parameters "
          f"(vision tower {vision:,}, language model {n - vision:,}; lm_head tied)")
    same = "matches" if n == PARAMS_PUBLISHED else "DIFFERS from"
    print(f"  {same} the published {PARAMS_PUBLISHED:,}; paper-notes' {PARAMS_NOTES:,} is "
          f"{PARAMS_NOTES - n:+,} off")
    gb = n / 1e9
    print(f"  static memory, full fine-tuning: fp32 weights {4 * gb:.1f} GB + fp32 grads "
          f"{4 * gb:.1f} + AdamW states {8 * gb:.1f} + bf16 reference {2 * gb:.1f} = "
          f"{18 * gb:.1f} GB before activations")
    return n


def internvl_config(arch):
    """InternVL3-2B's config from the real files (../shared/fixtures); 8B: the same with the
    published 7B text sizes (INTERNVL3_8B_TEXT)."""
    from transformers import AutoConfig
    src = FIXTURES / "internvl3-2b-hf"
    if not src.is_dir():
        raise SystemExit(f"error: --arch {arch} reads ../shared/fixtures/internvl3-2b-hf, which "
                         "is absent; run from a checkout that has it.")
    config = AutoConfig.from_pretrained(src)
    if arch == "internvl3-8b":
        for key, value in INTERNVL3_8B_TEXT.items():
            setattr(config.text_config, key, value)
        config.text_config.layer_types = ["full_attention"] * INTERNVL3_8B_TEXT["num_hidden_layers"]
    return config


def count_internvl(arch):
    """Build the InternVL architecture on the meta device; print its parameter count."""
    from transformers import InternVLForConditionalGeneration
    with torch.device("meta"):
        model = InternVLForConditionalGeneration(internvl_config(arch))
    n = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    print(f"{arch} architecture (meta device): {n:,} parameters (vision tower {vision:,}, "
          f"projector {projector:,}, language model {n - vision - projector:,})")
    return n


def real_prompts(name, k, size=RESISC_IMAGE):
    """`k` RESISC45-style prompts from the real processor files (../shared/fixtures/`name`):
    (processor, PromptInputs). Questions: data.make_choice_question over RESISC45's classes."""
    from PIL import Image
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(FIXTURES / name)
    processor.tokenizer.padding_side = "left"
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    questions = [data.make_choice_question(c, resisc45.RESISC45_CLASSES, rng)[0]
                 for c in rng.sample(resisc45.RESISC45_CLASSES, k)]
    noise = torch.randint(0, 256, (size, size, 3), generator=gen).byte().numpy()
    return processor, vlm.prompt_inputs(processor, [Image.fromarray(noise)] * k, questions)


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
    if args.arch == "tiny":
        from harness import tiny
        model_dir = args.tiny_dir or tiny.build_tiny_model(tempfile.mkdtemp(prefix="bench-tiny-"))
        policy, processor = vlm.load(str(model_dir), args.device, torch.float32, allow_cpu=True)
        examples = presets.load_dataset("shapes", "test")[:max(args.prompts, args.eval_images)]
        images, questions = [e.image() for e in examples], [e.question for e in examples]
        prompts = vlm.prompt_inputs(processor, images[:args.prompts], questions[:args.prompts])
        eval_images, eval_questions = images[:args.eval_images], questions[:args.eval_images]
        preprocess = lambda lo, hi: vlm.prompt_inputs(processor, eval_images[lo:hi],
                                                       eval_questions[lo:hi])
        eval_inputs = [preprocess(i, i + args.eval_batch)
                       for i in range(0, args.eval_images, args.eval_batch)]
        end_ids, pad_id = vlm.end_token_ids(policy, processor), vlm.pad_token_id(processor)
        special = [processor.tokenizer.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS]
        what = "tiny Qwen2.5-VL (random weights)"
    elif args.arch == "internvl3-2b":
        from transformers import InternVLForConditionalGeneration
        with torch.device(device):
            policy = InternVLForConditionalGeneration(internvl_config(args.arch))
        processor, prompts = real_prompts("internvl3-2b-hf", args.prompts)
        _, eval_all = real_prompts("internvl3-2b-hf", args.eval_images)
        batches = [(i, min(i + args.eval_batch, args.eval_images))
                   for i in range(0, args.eval_images, args.eval_batch)]
        eval_inputs = [{k: v[lo:hi] for k, v in eval_all.items()} for lo, hi in batches]
        from PIL import Image
        image = Image.new("RGB", (RESISC_IMAGE, RESISC_IMAGE))
        question = processor.tokenizer.decode(prompts["input_ids"][0][-60:])   # any real text
        preprocess = lambda lo, hi: vlm.prompt_inputs(processor, [image] * (hi - lo),
                                                       [question] * (hi - lo))
        end_ids, pad_id = [151645], processor.tokenizer.pad_token_id
        special = list(range(151643, 151674))
        what = "InternVL3-2B architecture (random weights; real processor files)"
    else:
        from PIL import Image
        from transformers import Qwen2VLImageProcessor
        policy = qwen25_vl_3b(device)
        image_processor = Qwen2VLImageProcessor()  # patch 14, merge 2, min_pixels 56*56
        gen = torch.Generator().manual_seed(0)
        noise = torch.randint(0, 256, (RESISC_IMAGE, RESISC_IMAGE, 3), generator=gen)
        eval_images = [Image.fromarray(noise.byte().numpy())] * args.eval_images
        preprocess = lambda lo, hi: image_processor(images=eval_images[lo:hi], return_tensors="pt")
        prompts = (real_prompts("qwen2.5-vl-3b-instruct", args.prompts)[1]
                   if (FIXTURES / "qwen2.5-vl-3b-instruct").is_dir()   # 166-172 real tokens
                   else synthetic_prompts(args.prompts, preprocess(0, 1), gen))
        eval_inputs = [synthetic_prompts(min(args.eval_batch, args.eval_images - i),
                                         preprocess(0, 1), gen)
                       for i in range(0, args.eval_images, args.eval_batch)]
        end_ids, pad_id = QWEN3B_IDS["end"], QWEN3B_IDS["pad"]
        special = list(range(QWEN3B_IDS["first_special"], QWEN3B_TEXT["vocab_size"]))
        what = "Qwen2.5-VL-3B architecture (random weights)"
    bf16 = device.type == "cuda"
    ref = copy.deepcopy(policy).to(torch.bfloat16 if bf16 else torch.float32)
    ref.eval().requires_grad_(False)
    policy.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    policy.train()
    params = [p for p in policy.parameters() if p.requires_grad]
    return SimpleNamespace(
        device=device, policy=policy, ref=ref, params=params, what=what,
        optimizer=torch.optim.AdamW(params, lr=5e-7, betas=(0.9, 0.999), weight_decay=0.01),
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16),
        precision="fp32 master + bf16 autocast, bf16 reference" if bf16 else "fp32",
        prompts=vlm.to_device(prompts, device), preprocess=preprocess,
        eval_inputs=[vlm.to_device(b, device) for b in eval_inputs],
        end_ids=end_ids, pad_id=pad_id, suppress=sorted(set(special) | set(end_ids)),
        prompt_tokens=prompts["input_ids"].shape[1])


def synthetic_prompts(batch, pixels, gen):
    """`batch` RESISC45-sized Qwen2.5-VL prompts: random text ids around 81 image-pad tokens."""
    image_tokens = int(pixels["image_grid_thw"].prod()) // 4          # merge 2x2 patches -> 81
    head = 20                                                         # system turn + user header
    ids = torch.randint(0, QWEN3B_IDS["first_special"], (batch, PROMPT_TOKENS), generator=gen)
    ids[:, 0] = QWEN3B_IDS["im_start"]
    ids[:, head] = QWEN3B_IDS["vision_start"]
    ids[:, head + 1:head + 1 + image_tokens] = QWEN3B_IDS["image"]
    ids[:, head + 1 + image_tokens] = QWEN3B_IDS["vision_end"]
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                mm_token_type_ids=(ids == QWEN3B_IDS["image"]).long(),
                pixel_values=pixels["pixel_values"].repeat(batch, 1),
                image_grid_thw=pixels["image_grid_thw"].repeat(batch, 1))


def ttrv_step(env, shared, L, n, advantages):
    """One step through the loop's own calls (the sampler, ttrv.experience, ttrv.update);
    returns seconds per phase."""
    t, dev = {}, env.device
    sampler = rollout if shared else plain
    cfg = SimpleNamespace(temperature=1.0, beta=0.001, micro_batch=None, clip_eps=0.2,
                          dual_clip=3.0, loss_agg="token_mean", max_grad_norm=1.0)
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
                group = ttrv.experience(env.ref, one, ids[rows], mask[rows], roll.logprobs[rows],
                                        advantages[b], 1.0, cfg, env.autocast, sampler)
            with clock(t, "update", dev):
                ttrv.update(env.policy, env.optimizer, env.params, [group], cfg, env.autocast,
                            sampler)
    finally:
        del env.optimizer.step
    t["policy forward+backward"] = t.pop("update") - t["AdamW step"]
    return {k: t.get(k, 0.0) for k in PHASES}


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
                    rollout.sample(env.policy, batch, 1, **opts)
                else:
                    evaluation.generate(env.policy, batch, **opts)
    env.policy.train()
    return t["eval"]


def peak_gb(env, reset=False):
    """GPU: peak allocated since the last reset; CPU: the process's peak RSS (Linux: KB)."""
    if env.device.type != "cuda":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if reset:
        torch.cuda.reset_peak_memory_stats(env.device)
    return torch.cuda.max_memory_allocated(env.device) / 1e9


def measure(env, args, L):
    """{path: {phase: s, "step": s, "eval img/s": x, memory...}} for shared and plain."""
    n, results = args.rollouts, {}
    gen = torch.Generator().manual_seed(0)
    advantages = torch.randn(args.prompts, n, generator=gen).to(env.device)
    for path, shared in (("shared", True), ("plain", False)):
        peak_gb(env, reset=True)
        runs = [ttrv_step(env, shared, L, n, advantages) for _ in range(1 + args.repeats)][1:]
        best = min(runs, key=lambda r: sum(r.values()))
        r = dict(best, step=sum(best.values()), step_peak=peak_gb(env))
        peak_gb(env, reset=True)
        eval_s = min([eval_seconds(env, shared, L) for _ in range(1 + args.repeats)][1:])
        r.update(eval_ips=args.eval_images / eval_s, eval_peak=peak_gb(env))
        results[path] = r
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
    rows[0] = ("sampling (plain: + old log-probs)",) + rows[0][1:]
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


# ------------------------------------------------------------------ log-prob memory (--logprob-memory)

def full_logprobs(head, hidden, targets, temperature=1.0):
    """The computation before chunking, kept here only as the reference: [R, T, V] logits."""
    logp = torch.log_softmax(head(hidden).float() / temperature, dim=-1)          # [R, T, V]
    return logp.gather(-1, targets[..., None]).squeeze(-1)                        # [R, T]


def _proc_bytes(key):
    """A /proc/self/status entry (VmRSS, VmHWM) in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_rss_of(fn):
    """(bytes, seconds): the process's peak RSS while fn() runs, above its RSS before (CPU).

    Linux resets the peak (VmHWM) when 5 is written to /proc/self/clear_refs; glibc returns
    large tensors to the system on free, so RSS follows torch's CPU allocations.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, t0 = _proc_bytes("VmRSS"), time.perf_counter()
    fn()
    return _proc_bytes("VmHWM") - before, time.perf_counter() - t0


def logprob_memory(args):
    """Peak memory of log-probs + backward, full [R, T, V] vs grpo.token_logprobs, per length."""
    vocab, hidden_size, rows = QWEN3B_TEXT["vocab_size"], 64, args.logprob_rows
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    ways = dict(full=lambda h, t: full_logprobs(head, h, t),
                chunked=lambda h, t: grpo.token_logprobs(head, h, t))
    lines = [f"log-prob memory on the CPU: {rows} response(s) x T tokens, vocabulary {vocab:,}, "
             f"hidden {hidden_size}, fp32, forward + backward; chunk {grpo.LOGPROB_CHUNK} tokens",
             f"{'T':>6}  {'[R, T, V] fp32 (GB)':>20}  {'full peak (GB)':>15}  "
             f"{'chunked peak (GB)':>18}  {'full s':>7}  {'chunked s':>9}"]
    for L in args.logprob_lens:
        hidden = torch.randn(rows, L, hidden_size, requires_grad=True)            # [R, T, H]
        targets = torch.randint(0, vocab, (rows, L))
        got = {}
        for name, way in ways.items():
            head.weight.grad = hidden.grad = None
            way(hidden[:, :1], targets[:, :1]).sum().backward()                   # warm-up
            head.weight.grad = hidden.grad = None
            got[name] = peak_rss_of(lambda: way(hidden, targets).sum().backward())
        lines.append(f"{L:>6}  {rows * L * vocab * 4 / 1e9:>20.2f}  {got['full'][0] / 1e9:>15.2f}  "
                     f"{got['chunked'][0] / 1e9:>18.2f}  {got['full'][1]:>7.2f}  "
                     f"{got['chunked'][1]:>9.2f}")
    lines.append("peak = highest RSS during the call minus RSS before it (/proc/self VmHWM after "
                 "a reset), so it includes the head's weight gradient (hidden x V x 4 B).")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["tiny", "qwen2.5-vl-3b", "internvl3-2b", "internvl3-8b"],
                   default="tiny", help="internvl3-8b: --device meta only (parameter count)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or meta (3B: count parameters only)")
    p.add_argument("--rollouts", type=int, default=32, help="N, responses per prompt")
    p.add_argument("--prompts", type=int, default=4, help="B, prompts per step")
    p.add_argument("--response-len", type=int, nargs="+", default=[4],
                   help="forced response length(s) L; several give one table each")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    p.add_argument("--eval-images", type=int, default=64, help="images per eval measurement")
    p.add_argument("--eval-batch", type=int, default=32, help="prompts per eval batch")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--tiny-dir", default=None, help="reuse a built tiny model directory")
    p.add_argument("--logprob-memory", action="store_true",
                   help="only the peak memory of the log-probs, full vs chunked (CPU, Linux)")
    p.add_argument("--logprob-lens", type=int, nargs="+", default=[16, 256, 1024],
                   help="response lengths T for --logprob-memory")
    p.add_argument("--logprob-rows", type=int, default=2, help="responses for --logprob-memory")
    p.add_argument("--text-sampler", action="store_true",
                   help="only the tiny text LM's sampler vs generate (harness/bench_text.py)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.logprob_memory:
        print("\n".join(logprob_memory(args)))
        return 0
    if args.text_sampler:
        from harness import bench_text
        print("\n".join(bench_text.report(args)))
        return 0
    if args.device == "meta":
        if args.arch == "tiny":
            print("error: --device meta counts a real architecture's parameters; pass --arch "
                  "qwen2.5-vl-3b, internvl3-2b or internvl3-8b.", file=sys.stderr)
            return 1
        count_3b() if args.arch == "qwen2.5-vl-3b" else count_internvl(args.arch)
        return 0
    if args.arch == "internvl3-8b":
        print("error: --arch internvl3-8b is counted on the meta device only (--device meta).",
              file=sys.stderr)
        return 1
    if args.arch != "tiny" and not args.device.startswith("cuda"):
        print("error: the 3B architecture needs --device cuda (or --device meta to count its "
              "parameters); fp32 weights + AdamW states alone are ~60 GB.", file=sys.stderr)
        return 1
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


if __name__ == "__main__":
    sys.exit(main())
