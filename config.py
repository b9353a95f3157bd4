"""Every setting of a TTRV run in one place, and the command line that fills it.

`Config` is the single list of hyperparameters (nanoGPT style): each field carries its --help
text and group, and `parse_args` builds one flag per field. This module imports no torch or
transformers, so `python ttrv.py --help` and the checks on the settings run before anything
heavy is loaded.

    cfg = parse_args(["--model", "Qwen/Qwen2.5-VL-3B", "--dataset", "resisc45"])
"""

import argparse
import dataclasses
from dataclasses import dataclass, field

import rewards


def opt(default, group, help, choices=None, alias=None):  # a config field and its --help entry
    return field(default=default, metadata=dict(group=group, help=help, choices=choices,
                                                alias=alias))


@dataclass
class Config:
    # model
    model: str = opt("tiny", "model", "hub id, local directory, or 'tiny' (built offline)")
    device: str = opt("auto", "model", "cuda, cpu, or auto (cuda when available)")
    precision: str = opt("auto", "model", "bf16 (fp32 master weights, bf16 autocast, bf16 "
                         "reference), fp32, or auto (bf16 on GPU, fp32 on CPU)",
                         ["auto", "bf16", "fp32"])
    gradient_checkpointing: bool = opt(True, "model", "recompute activations in the backward")
    freeze_vision: bool = opt(False, "model", "train only the language model (saves memory)")
    allow_cpu: bool = opt(False, "model", "train a >1B model on the CPU anyway")
    # data
    dataset: str = opt("shapes", "data", "resisc45, shapes, folder:PATH, jsonl:PATH, ... "
                       "(adapt and evaluate on it)")
    data_dir: str = opt(None, "data", "local copy of the data (resisc45: the zip or folder)")
    adapt_dataset: str = opt(None, "data", "adapt on this dataset instead (Table 12)")
    eval_dataset: str = opt(None, "data", "evaluate on this dataset instead (Table 12)")
    eval_data_dir: str = opt(None, "data", "local copy of --eval-dataset")
    num_samples: int = opt(20, "data", "unlabeled test examples to adapt on (Tables 6, 9)")
    sampling: str = opt("random", "data", "random, or biased: only from --classes classes "
                        "(Table 4; reads labels to pick the classes)", ["random", "biased"])
    classes: int = opt(None, "data", "number of classes for --sampling biased")
    seed: int = opt(0, "data", "seed for the adaptation draw, its order and the sampling")
    seeds: list = opt(None, "data", "several seeds in one command, e.g. --seeds 0 1 2 3 4 "
                      "(Table 11); results as mean and std")
    data_seed: int = opt(0, "data", "seed that fixes every question's options (same for all runs)")
    # rollouts
    rollouts: int = opt(32, "rollouts", "N, responses sampled per prompt: the votes of eq. 3",
                        alias="--votes")
    train_rollouts: int = opt(None, "rollouts", "train on only the first K of them (the official "
                              "code: 32 votes, 16 trained; default all, as the paper says)")
    micro_batch: int = opt(None, "rollouts", "responses per forward/backward chunk (lowers "
                           "memory; default the whole group)")
    temperature: float = opt(1.0, "rollouts", "sampling temperature")
    top_p: float = opt(1.0, "rollouts", "nucleus sampling threshold")
    max_new_tokens: int = opt(1024, "rollouts", "longest response, in tokens")
    prompts_per_step: int = opt(4, "rollouts", "prompts whose rollouts are drawn together "
                                "(official code: 8, one per GPU, drop_last)")
    shared_prefix: bool = opt(True, "rollouts", "encode each prompt once per group "
                              "(--no-shared-prefix: the plain path, N copies)")
    # reward
    reward: str = opt("ttrv", "reward", "reward function", list(rewards.REWARDS))
    alpha: float = opt(0.75, "reward", "weight of the diversity reward (eq. 7)")
    entropy: str = opt("raw", "reward", "raw (the paper's eq. 5) or normalized (official code)",
                       ["raw", "normalized"])
    no_answer: str = opt("own", "reward", "how unparseable responses vote",
                         list(rewards.NO_ANSWER_POLICIES))
    baseline: str = opt("group", "reward", "advantage baseline: group (eq. 2), batch or none",
                        ["group", "batch", "none"])
    dare_alpha: float = opt(0.5, "reward", "DARE exploration-bonus weight (ours; unpublished)")
    dare_tau: float = opt(0.05, "reward", "DARE pruning threshold (ours; unpublished)")
    # optimisation
    lr: float = opt(5e-7, "optimisation", "peak learning rate (AdamW, cosine schedule)")
    weight_decay: float = opt(0.01, "optimisation", "AdamW weight decay")
    warmup_ratio: float = opt(0.03, "optimisation", "linear warmup, share of all updates")
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
    # output
    output_dir: str = opt(None, "output", "run directory (default: runs/<time>-<model>-<data>)")
    overwrite: bool = opt(False, "output", "allow writing into an existing run directory")
    save_model: bool = opt(True, "output", "save the adapted model (save_pretrained)")
    quiet: bool = opt(False, "output", "no progress bars or per-step logs")


# The tiny offline model is ~1,000x smaller than a 3B VLM: at the paper's lr of 5e-7 its weights
# would not move in 40 updates, and its answers are one letter. Used only with --model tiny,
# for settings the command line leaves at their default.
TINY_PRESETS = dict(lr=1e-4, max_new_tokens=8)


def parse_args(argv=None) -> Config:
    """Config from the command line; one flag per field, grouped as in Config."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    groups = {}
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(meta["group"])
        flags = ["--" + f.name.replace("_", "-")] + ([meta["alias"]] if meta["alias"] else [])
        if f.type is bool:
            kw = dict(action=argparse.BooleanOptionalAction, help=meta["help"])
        else:
            kw = dict(type=int, nargs="+") if f.type is list else dict(type=f.type)
            kw.update(choices=meta["choices"], help=meta["help"] + f" (default: {f.default})")
        groups[meta["group"]].add_argument(*flags, dest=f.name, default=f.default, **kw)
    known, _ = parser.parse_known_args(argv)
    if known.model == "tiny":          # presets replace defaults only; flags still win
        parser.set_defaults(**TINY_PRESETS)
    cfg = Config(**vars(parser.parse_args(argv)))
    if cfg.reward == "dare" and not cfg.shared_prefix:
        parser.error("--reward dare needs the token entropies that the shared-prefix sampler "
                     "records; drop --no-shared-prefix.")
    if cfg.sampling == "biased" and not cfg.classes:
        parser.error("--sampling biased needs --classes K (the number of classes to draw from).")
    return cfg
