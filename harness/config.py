"""Every setting of a TTRV run in one place, and the command line that fills it.

`Config` is the single list of settings: each field carries its --help text and group, and
`parse_args` builds one flag per field; the algorithm's own fields (ttrv.Settings, the paper's
values at the top of ttrv.py) go to it through harness/run.py's `settings`. No torch import, so
`python ttrv.py --help` and the checks on the settings run before anything heavy is loaded.

    cfg = parse_args(["--model", "Qwen/Qwen2.5-VL-3B", "--dataset", "resisc45"])
"""

import argparse
import dataclasses
import math
import importlib.util
import os
from dataclasses import dataclass, field

import answers
import rewards
from harness.families import OFFICIAL, TTRL, TTRL_BENCHMARKS


# Responses per forward/backward chunk on a GPU when --micro-batch is unset: one rambling
# response then costs 8 rows at its length, not the whole group (a memory knob, not a
# hyperparameter: the gradient is the same at any size).
CUDA_MICRO_BATCH = 8


def opt(default, group, help, choices=None, alias=None):  # a config field and its --help entry
    return field(default=default, metadata=dict(group=group, help=help, choices=choices,
                                                alias=alias))


@dataclass
class Config:
    protocol: str = opt("paper", "protocol", "paper: the paper's text; official: the settings "
                        "the official runs used; ttrl: TTRL's text-LLM scripts (docs/protocols.md;"
                        " explicit flags still win)", ["paper", "official", "ttrl"])
    # model
    model: str = opt("tiny", "model", "hub id, local directory, 'tiny' (built offline, "
                     "with a built-in failure of format), 'tiny-letters' (letters only) or "
                     "'tiny-math' (a text LM on arithmetic, docs/tiny-math.md)")
    device: str = opt("auto", "model", "cuda, cpu, or auto (cuda when available; pick a GPU with "
                      "CUDA_VISIBLE_DEVICES)", ["auto", "cuda", "cpu"])
    precision: str = opt("auto", "model", "bf16 (fp32 master weights under bf16 autocast; the "
                         "reference computes the same way), fp32, or auto (bf16 on a GPU that "
                         "has it, else fp32)", ["auto", "bf16", "fp32"])
    gradient_checkpointing: bool = opt(True, "model", "recompute activations in the backward")
    freeze_vision: bool = opt(None, "model", "freeze the vision tower (saves memory); default: "
                              "the family's protocol (InternVL frozen, Qwen-VL trained)")
    allow_cpu: bool = opt(False, "model", "train a >1B model on the CPU anyway")
    lora_rank: int = opt(None, "model", "train rank-R LoRA adapters (PEFT) on the language model's "
                         "attention and MLP projections instead of every weight; the reference is "
                         "the same model with its adapters off (default: full fine-tuning)")
    lora_alpha: float = opt(None, "model", "LoRA scale alpha (default: 2 x --lora-rank)")
    # data
    dataset: str = opt("shapes", "data", "resisc45, shapes, folder:PATH, jsonl:PATH, math500, "
                       "mmlu-pro, ... (adapt and evaluate on it); NAME:levelN keeps one level")
    data_dir: str = opt(None, "data", "local copy of the data (resisc45: the zip or folder)")
    adapt_dataset: str = opt(None, "data", "adapt on this dataset instead (Table 12)")
    eval_dataset: str = opt(None, "data", "evaluate on this dataset instead (Table 12)")
    eval_data_dir: str = opt(None, "data", "local copy of --eval-dataset")
    num_samples: int = opt(20, "data", "unlabeled test examples to adapt on (Tables 6, 9; "
                           "--protocol ttrl: all of them)")
    sampling: str = opt("random", "data", "random, or biased: only from --classes classes "
                        "(Table 4; reads labels to pick the classes)", ["random", "biased"])
    classes: int = opt(None, "data", "number of classes for --sampling biased")
    seed: int = opt(0, "data", "seed for the adaptation draw, its order and the sampling")
    seeds: list = opt(None, "data", "several seeds in one command, e.g. --seeds 0 1 2 3 4 "
                      "(Table 11); results as mean and std")
    data_seed: int = opt(0, "data", "seed that fixes every question's options (same for all runs)")
    fixed_adaptation_set: bool = opt(False, "data", "draw the adaptation set with --data-seed, "
                                     "the same for every --seed (official: a fixed train.json)")
    max_image_side: int = opt(None, "data", "drop examples whose image side exceeds this "
                              "(the paper drops images over 1000x1000, Table 8)")
    num_workers: int = opt(None, "data", "processes that decode and preprocess the next images "
                           "while the model runs (torch DataLoader workers; default: min(4, CPUs) "
                           "on CUDA, 0 on the CPU)")
    # rollouts
    rollouts: int = opt(32, "rollouts", "N, responses sampled per prompt: the votes of eq. 3",
                        alias="--votes")
    train_rollouts: int = opt(None, "rollouts", "train on only the first K of them (the official "
                              "code: 32 votes, 16 trained; default all, as the paper says)")
    micro_batch: int = opt(None, "rollouts", "responses per forward/backward chunk, each cut "
                           f"to its longest response (lowers memory; default: {CUDA_MICRO_BATCH} "
                           "on a GPU, the whole group on the CPU)")
    temperature: float = opt(1.0, "rollouts", "sampling temperature (--protocol official / ttrl: "
                             "per family, families.official_temperature / ttrl_temperature)")
    top_p: float = opt(1.0, "rollouts", "nucleus sampling threshold")
    max_new_tokens: int = opt(1024, "rollouts", "longest response, in tokens")
    prompts_per_step: int = opt(4, "rollouts", "prompts whose rollouts are drawn together "
                                "(official code: one per GPU, 4 in the InternVL3-2B/Qwen logs)")
    shared_prefix: bool = opt(True, "rollouts", "encode each prompt once per group "
                              "(--no-shared-prefix: the plain path, N copies)")
    # reward
    reward: str = opt("ttrv", "reward", "reward function", list(rewards.REWARDS))
    alpha: float = opt(0.75, "reward", "weight of the diversity reward (eq. 7)")
    entropy: str = opt("raw", "reward", "raw (the paper's eq. 5) or normalized (official code)",
                       ["raw", "normalized"])
    no_answer: str = opt("own", "reward", "how unparseable responses vote",
                         list(rewards.NO_ANSWER_POLICIES))
    answer_reader: str = opt("paper", "reward", "how option letters are read: paper (ours) or "
                             "official (the official TTRV code's)", list(answers.READERS))
    majority_match: str = opt("key", "reward", "--reward majority rewards the winner's key (key) "
                              "or answers graded equal to it (grade: TTRL's rule)", ["key", "grade"])
    baseline: str = opt("group", "reward", "advantage baseline: group (eq. 2), batch or none",
                        ["group", "batch", "none"])
    adv_ddof: int = opt(0, "reward", "advantage std: 0 population (the paper's std), 1 unbiased "
                        "(official torch.std)", [0, 1])
    dare_alpha: float = opt(0.5, "reward", "DARE exploration-bonus weight (ours; unpublished)")
    dare_tau: float = opt(0.05, "reward", "DARE pruning threshold (ours; unpublished)")
    # optimisation
    lr: float = opt(5e-7, "optimisation", "peak learning rate (AdamW, cosine schedule)")
    weight_decay: float = opt(0.01, "optimisation", "AdamW weight decay")
    warmup_ratio: float = opt(0.03, "optimisation", "linear warmup, share of all batches of prompts")
    beta: float = opt(0.001, "optimisation", "KL penalty coefficient (k3 estimator)")
    clip_eps: float = opt(0.2, "optimisation", "importance ratio clip epsilon")
    dual_clip: float = opt(3.0, "optimisation", "dual-clip constant for negative advantages")
    loss_agg: str = opt("token_mean", "optimisation", "loss aggregation over tokens",
                        ["token_mean", "sequence_mean", "dr_grpo"])
    max_grad_norm: float = opt(1.0, "optimisation", "gradient-norm clip")
    epochs: int = opt(2, "optimisation", "passes over the adaptation examples")
    prompts_per_update: int = opt(None, "optimisation", "prompts whose groups make one AdamW "
                                  "update, token mean over all of them (default 1; under torchrun"
                                  " one per process: K processes, K prompts per update)")
    # evaluation
    eval_batch_size: int = opt(32, "evaluation", "prompts per greedy evaluation batch")
    eval_limit: int = opt(None, "evaluation", "evaluate only the first N test examples")
    eval_max_new_tokens: int = opt(None, "evaluation", "default: --max-new-tokens")
    eval_every: int = opt(None, "evaluation", "also evaluate every k steps (Figure 1)")
    eval_subset: int = opt(None, "evaluation", "those evaluations use a seeded random subset of "
                           "this many test examples (default: the whole test set)")
    eval_samples: int = opt(0, "evaluation", "also sample K responses per test question: avg@K "
                            "(mean accuracy of the K, TTRL's 'pass@1'), maj@K (their majority "
                            "answer) and unbiased pass@k for k = 1, 2, 4, ..., K")
    base_majority: bool = opt(False, "evaluation", "the base model's maj@N: N = --rollouts samples "
                              "per test question, drawn as adaptation draws (--protocol ttrl: on)")
    eval_temperature: float = opt(0.6, "evaluation", "temperature of those samples (TTRL's)")
    eval_top_p: float = opt(0.95, "evaluation", "nucleus of those samples (TTRL's)")
    # output
    output_dir: str = opt(None, "output", "run directory (default: runs/<time>-<model>-<data>)")
    overwrite: bool = opt(False, "output", "replace an existing run directory: the old one is moved "
                          "aside to DIR.replaced-<time> (never deleted) before anything is written")
    save_model: bool = opt(True, "output", "save the adapted model (save_pretrained)")
    merge_lora: bool = opt(False, "output", "with --lora-rank: also save the merged model "
                           "(model/, which eval.py loads); the adapters always go to adapter/")
    save_dtype: str = opt(None, "output", "dtype of the saved model (default: the training compute "
                          "dtype: bf16 under bf16 precision, fp32 otherwise)", ["bf16", "fp32"])
    quiet: bool = opt(False, "output", "no progress bars or per-step logs")


# The tiny offline models are ~1,000x smaller than a 3B VLM: at the paper's lr of 5e-7 their
# weights would not move in 40 updates, and their answers are a few tokens. Used only with
# --model tiny or tiny-letters, for settings the command line leaves at their default; an
# evaluation every 5 steps gives Figure 1 (trajectory.png) a middle point.
TINY_PRESETS = dict(lr=1e-4, max_new_tokens=8, eval_every=5)
# The offline tiny models (tiny_teach.RECIPES): "tiny" has a built-in failure of format (it often
# answers with a sentence), "tiny-letters" always answers with a letter.
TINY_MODELS = ("tiny", "tiny-letters", "tiny-math")
# tiny-math (harness/tiny_math.py): a text LM answering one \\boxed{} of digits; its own dataset.
TINY_MATH_PRESETS = dict(TINY_PRESETS, max_new_tokens=12, dataset="tiny-math")


# The range of every numeric setting: field -> (test, what to pass). None always passes (unset).
RANGES = dict(
    num_samples=(lambda v: v >= 1, "an integer >= 1"),
    classes=(lambda v: v >= 2, "an integer >= 2"),
    rollouts=(lambda v: v >= 1, "an integer >= 1 (the paper: 32)"),
    train_rollouts=(lambda v: v >= 1, "an integer >= 1, at most --rollouts"),
    micro_batch=(lambda v: v >= 1, "an integer >= 1"),
    lora_rank=(lambda v: v >= 1, "an integer >= 1 (e.g. 16)"),
    lora_alpha=(lambda v: v > 0, "a number > 0"),
    temperature=(lambda v: v > 0, "a number > 0 (the paper: 1.0): at 0 the N responses are one "
                 "greedy answer repeated, every advantage is 0 and nothing is learned"),
    top_p=(lambda v: 0 < v <= 1, "a number in (0, 1]"),
    max_new_tokens=(lambda v: v >= 1, "an integer >= 1"),
    prompts_per_step=(lambda v: v >= 1, "an integer >= 1"),
    alpha=(lambda v: v >= 0, "a number >= 0 (the paper: 0.75)"),
    dare_alpha=(lambda v: v >= 0, "a number >= 0"),
    dare_tau=(lambda v: 0 <= v < 1, "a number in [0, 1)"),
    lr=(lambda v: v > 0, "a number > 0 (the paper: 5e-7)"),
    weight_decay=(lambda v: v >= 0, "a number >= 0"),
    warmup_ratio=(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    beta=(lambda v: v >= 0, "a number >= 0 (0 drops the KL term)"),
    clip_eps=(lambda v: v > 0, "a number > 0 (the paper: 0.2)"),
    dual_clip=(lambda v: v > 1, "a number > 1 (verl: 3.0)"),
    max_grad_norm=(lambda v: v > 0, "a number > 0"),
    epochs=(lambda v: v >= 1, "an integer >= 1"),
    eval_batch_size=(lambda v: v >= 1, "an integer >= 1"),
    eval_limit=(lambda v: v >= 1, "an integer >= 1 (or leave it out for the whole test set)"),
    eval_max_new_tokens=(lambda v: v >= 1, "an integer >= 1"),
    eval_every=(lambda v: v >= 1, "an integer >= 1"),
    eval_subset=(lambda v: v >= 1, "an integer >= 1"),
    num_workers=(lambda v: v >= 0, "an integer >= 0 (0: prepare images in the main process)"),
    max_image_side=(lambda v: v >= 1, "an integer >= 1"),
    eval_samples=(lambda v: v >= 0, "an integer >= 0 (TTRL: 16)"),
    eval_temperature=(lambda v: v > 0, "a number > 0 (TTRL: 0.6)"),
    eval_top_p=(lambda v: 0 < v <= 1, "a number in (0, 1]"),
)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check(cfg: Config) -> str | None:
    """The first problem with the settings as one sentence saying what to pass, else None.

    Runs right after parsing, before any data, model or GPU is touched. Settings that would run
    but learn nothing are refused: with the group baseline (eq. 2) a group of one response, or
    N identical greedy responses (temperature 0), has every advantage 0.

    >>> check(Config(rollouts=0))
    '--rollouts 0 is out of range; pass an integer >= 1 (the paper: 32).'
    """
    problem = check_numbers(dataclasses.asdict(cfg))
    if problem:
        return problem
    k = cfg.train_rollouts or cfg.rollouts
    if k > cfg.rollouts:
        return (f"--train-rollouts {k} is more than --rollouts {cfg.rollouts}; the trained "
                "responses are the first K of the N sampled, so pass K <= N.")
    if k == 1 and cfg.baseline == "group":
        return ("one trained response per prompt has a group advantage of 0 (eq. 2), so nothing "
                "would be learned; pass --rollouts (and --train-rollouts) of 2 or more (the paper: "
                "32), or --baseline batch or none.")
    if cfg.seeds and len(set(cfg.seeds)) < len(cfg.seeds):
        return f"--seeds {' '.join(map(str, cfg.seeds))} repeats a seed; pass each seed once."
    if cfg.sampling == "biased" and not cfg.classes:
        return "--sampling biased needs --classes K (the number of classes to draw from)."
    if (cfg.lora_alpha is not None or cfg.merge_lora) and not cfg.lora_rank:
        return "--lora-alpha and --merge-lora apply to LoRA; pass --lora-rank R as well."
    if cfg.lora_rank and importlib.util.find_spec("peft") is None:
        return "--lora-rank needs the peft package; install it: pip install -r requirements.txt."
    if cfg.lora_rank and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return ("--lora-rank runs in one process (LoRA under FSDP is untested); launch without "
                "torchrun, or drop --lora-rank.")
    return check_device(cfg.device) or check_precision(cfg.precision, cfg.device)


def check_precision(precision: str, device: str) -> str | None:
    """None, or one sentence when bf16 is asked of a GPU without it (before any model loads)."""
    if precision == "bf16" and device != "cpu" and _cuda_without_bf16():
        return ("--precision bf16 but this GPU has no bf16 (compute capability below 8.0); pass "
                "--precision fp32, or auto (fp32 on such a GPU).")
    return None


def _cuda_without_bf16() -> bool:
    import torch
    return torch.cuda.is_available() and not torch.cuda.is_bf16_supported(including_emulation=False)


def bf16_compute(precision: str, device: str) -> bool:
    """Whether to compute under bf16 autocast: --precision bf16, or auto on a GPU with bf16
    (auto on a GPU without it, e.g. a V100 or T4, computes in fp32)."""
    if precision != "auto":
        return precision == "bf16"
    return device.startswith("cuda") and not _cuda_without_bf16()


def micro_batch_for(cfg: Config) -> int | None:
    """--micro-batch, or CUDA_MICRO_BATCH rows on a GPU when it is unset (None: the whole group)."""
    if cfg.micro_batch is None and cfg.device.startswith("cuda"):
        return CUDA_MICRO_BATCH
    return cfg.micro_batch


def check_numbers(values: dict, ranges: dict = None) -> str | None:
    """The first of `values` (field name -> value) not finite or out of its range (`ranges`,
    default RANGES), as one sentence saying what to pass; None when all pass (None: unset).

    >>> check_numbers(dict(lr=float("inf")))
    '--lr inf is not a finite number; pass a number > 0 (the paper: 5e-7).'
    """
    for name, (ok, what) in (RANGES if ranges is None else ranges).items():
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):   # inf passes "> 0"
            return f"{flag(name)} {value} is not a finite number; pass {what}."
        if not ok(value):
            return f"{flag(name)} {value} is out of range; pass {what}."
    return None


def check_device(device: str) -> str | None:
    """None if `device` can be used, else one sentence; imports torch only to look for CUDA."""
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            return (f"--device {device} but torch sees no CUDA GPU (torch.cuda.is_available() "
                    "is False); pass --device cpu, or auto to use a GPU only when there is one.")
    return None


def _help(f, presets: dict) -> str:
    """The field's help text with the default that will apply, said once."""
    text = f.metadata["help"]
    if f.type is bool and f.default is not None:   # None: the help text says what applies
        return text + f" (default: {flag(f.name) if f.default else '--no-' + flag(f.name)[2:]})"
    if "default" in text or f.default is None:
        return text  # the text says it, or None means "not set"
    text += f" (default: {f.default}"
    if f.name in presets:
        text += f"; {presets[f.name]} for --model tiny"
    return text + ")"


def _add_flag(parser, groups, f, presets, alias=None, **override):
    """One flag for field `f` (with its aliases) in the argument group named by its metadata."""
    meta = f.metadata
    if meta["group"] not in groups:
        groups[meta["group"]] = parser.add_argument_group(meta["group"])
    flags = [flag(f.name)] + [a for a in (meta["alias"], alias) if a]
    if f.type is bool:
        kw = dict(action=argparse.BooleanOptionalAction)
    else:
        kw = dict(type=int, nargs="+") if f.type is list else dict(type=f.type)
        kw.update(choices=meta["choices"])
    kw.update(dest=f.name, default=f.default, help=_help(f, presets))
    groups[meta["group"]].add_argument(*flags, **dict(kw, **override))


def parse_args(argv=None) -> Config:
    """Config from the command line, checked (config.check); one flag per field, grouped as in
    Config. A bad setting ends here in one sentence and exit code 2, before anything is loaded."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     usage="%(prog)s [options]   (see --help)")
    groups = {}
    for f in dataclasses.fields(Config):
        _add_flag(parser, groups, f, TINY_PRESETS)
    known, _ = parser.parse_known_args(argv)
    tiny = {} if known.model not in TINY_MODELS else (
        TINY_MATH_PRESETS if known.model == "tiny-math" else TINY_PRESETS)
    parser.set_defaults(**tiny)        # presets replace defaults only; flags still win
    if known.protocol == "official":
        parser.set_defaults(**OFFICIAL)
    if known.protocol == "ttrl":
        dataset = parser.parse_known_args(argv)[0].dataset   # tiny-math's own default included
        parser.set_defaults(**TTRL, **TTRL_BENCHMARKS.get(dataset.split(":")[0], {}))
    parser.set_defaults(**tiny)        # a tiny model keeps its sizes under every protocol
    cfg = Config(**vars(parser.parse_args(argv)))
    problem = check(cfg)
    if problem:
        parser.error(problem)
    return cfg
