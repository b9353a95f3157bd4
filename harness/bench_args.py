"""bench.py's command line: its flags, and the checks that refuse a bad one before any model.

    args = parse_args(argv)     # a bad flag ends here: one sentence, exit code 2 (as ttrv.py)

bench.py has five modes; each reads its own flags (MODES), and a flag the chosen mode would not
read is refused rather than ignored (a figure measured at other settings than asked would be
misread). Numbers are checked against RANGES, the device against what torch sees, and the
architecture against the device it needs. No model is built here; torch is imported only to
look for CUDA.
"""

import argparse
import os
import re

from harness.config import check_numbers, flag
from harness.shapes import SHAPES_SIZES

ARCHS = ["tiny", "qwen2.5-vl-3b", "internvl3-2b", "internvl3-8b"]

PICKS = ("gpu_check", "logprob_memory", "text_sampler")   # the flags that pick a mode
# The flags each mode reads (besides the one that picks it). "steps": the default timing tables.
MODES = {
    "gpu_check": {"dry_run", "gpu_check_json"},
    "logprob_memory": {"logprob_lens", "logprob_rows"},
    "text_sampler": {"device", "threads", "repeats", "markdown"},   # its tables are Markdown
    "meta": {"arch", "device"},
    "steps": {"arch", "device", "rollouts", "prompts", "response_len", "repeats", "eval_images",
              "eval_batch", "threads", "markdown", "tiny_dir"},
}

RANGES = dict(
    rollouts=(lambda v: v >= 1, "an integer >= 1 (N, the paper: 32)"),
    prompts=(lambda v: v >= 1, "an integer >= 1"),
    response_len=(lambda v: v >= 1, "integers >= 1"),
    repeats=(lambda v: v >= 1, "an integer >= 1 (timed repeats after the warm-up)"),
    eval_images=(lambda v: v >= 1, "an integer >= 1"),
    eval_batch=(lambda v: v >= 1, "an integer >= 1"),
    threads=(lambda v: v >= 1, "an integer >= 1"),
    logprob_lens=(lambda v: v >= 1, "integers >= 1"),
    logprob_rows=(lambda v: v >= 1, "an integer >= 1"),
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="bench.py: numbers, not impressions. Times every "
                                "phase of a TTRV step, shared-prefix vs plain.")
    p.add_argument("--arch", choices=ARCHS, default="tiny",
                   help="internvl3-8b: --device meta only (parameter count)")
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
    p.add_argument("--gpu-check", action="store_true",
                   help="only the GPU check (harness/gpu_check.py): the issue-17 figures, 1 GPU")
    p.add_argument("--dry-run", action="store_true",
                   help="with --gpu-check: the same code on the tiny models, CPU")
    p.add_argument("--gpu-check-json", default=None, help="write the GPU check's JSON here")
    p.add_argument("--text-sampler", action="store_true",
                   help="only the tiny text LM's sampler vs generate (harness/bench_text.py)")
    return p


def mode(args) -> str:
    """Which of MODES the flags pick (the first of them when several do; check refuses that)."""
    picked = [m for m in PICKS if getattr(args, m)]
    return picked[0] if picked else "meta" if args.device == "meta" else "steps"


def check(args, defaults: dict) -> str | None:
    """The first problem with bench.py's flags as one sentence saying what to pass, else None.
    `defaults`: the parser's defaults, to tell a flag given from one left alone."""
    picked = [flag(m) for m in PICKS if getattr(args, m)]
    if len(picked) > 1:
        return f"{' and '.join(picked)} are separate measurements; pass one of them per run."
    for name in RANGES:
        values = getattr(args, name)
        for value in values if isinstance(values, list) else [values]:
            problem = check_numbers({name: value}, RANGES)
            if problem:
                return problem
    m = mode(args)
    given = [k for k, v in vars(args).items()
             if v != defaults[k] and k not in PICKS and k not in MODES[m]]
    if given:
        named = lambda k: {"meta": "--device meta (a parameter count)",   # noqa: E731
                           "steps": "the step timings"}.get(k, flag(k))
        owner = next(k for k in MODES if given[0] in MODES[k])
        return (f"{flag(given[0])} is not used by {named(m)} (it is read by {named(owner)}); "
                "drop it.")
    if not re.fullmatch(r"cpu|meta|cuda(:\d+)?", args.device):
        return f"--device {args.device} is not a device; pass cpu, cuda (or cuda:N) or meta."
    if m == "text_sampler" and args.device == "meta":
        return "--text-sampler times a real model; pass --device cpu or cuda."
    if m == "meta" and args.arch == "tiny":
        return ("--device meta counts a real architecture's parameters; pass --arch "
                "qwen2.5-vl-3b, internvl3-2b or internvl3-8b.")
    if m == "steps" and args.arch == "internvl3-8b":
        return "--arch internvl3-8b is counted on the meta device only (--device meta)."
    if m == "steps" and args.arch != "tiny" and not args.device.startswith("cuda"):
        return ("the 3B architecture needs --device cuda (or --device meta to count its "
                "parameters); fp32 weights + AdamW states alone are ~60 GB.")
    if args.tiny_dir and m == "steps" and args.arch != "tiny":
        return f"--tiny-dir is the tiny model's, not --arch {args.arch}'s; drop it."
    if args.tiny_dir and not os.path.isdir(args.tiny_dir):
        return f"--tiny-dir {args.tiny_dir} is not a directory; pass a built tiny model's folder."
    shapes = SHAPES_SIZES["test"]
    if m == "steps" and args.arch == "tiny" and max(args.prompts, args.eval_images) > shapes:
        return (f"--arch tiny draws its prompts and eval images from the {shapes} shapes test "
                f"questions; pass --prompts and --eval-images of at most {shapes}.")
    if args.device.startswith("cuda") and m != "gpu_check":
        import torch
        if not torch.cuda.is_available():
            return f"--device {args.device} but torch sees no CUDA GPU; pass --device cpu."
    return None


def parse_args(argv=None):
    """bench.py's flags, checked (check): a bad one ends in one sentence and exit code 2."""
    p = parser()
    args = p.parse_args(argv)
    problem = check(args, vars(p.parse_args([])))
    if problem:
        p.error(problem)
    return args
