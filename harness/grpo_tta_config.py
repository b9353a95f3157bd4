"""Every setting of a GRPO-TTA run (grpo_tta.py) in one place, and the command line that fills it.

Like config.py for ttrv.py: each field carries its --help text and group, `parse_args` builds one
flag per field and `check` refuses a bad setting in one sentence. No torch is imported here, so
`python grpo_tta.py --help` and these checks answer before anything heavy loads.

Each default the GRPO-TTA abstract does not fix is our reading (docs/grpo-tta.md has the table of
choices and the alternatives considered).
"""

import argparse
import dataclasses
import os
from dataclasses import dataclass

from harness import clip_data
from harness.config import check_device, check_numbers, flag, opt

TINY_CLIP = "tiny-clip"     # the offline tiny CLIP (tiny_clip.py)


@dataclass
class TTAConfig:
    # model and data
    model: str = opt(TINY_CLIP, "model", "CLIP hub id, local directory, or 'tiny-clip' (built "
                     "and taught offline in seconds)")
    device: str = opt("auto", "model", "cuda, cpu, or auto", ["auto", "cuda", "cpu"])
    dataset: str = opt("toy-shifted", "data", f"one of {clip_data.names_text()}")
    data_dir: str = opt(None, "data", "local copy of the dataset (see clip_data.py for layouts)")
    classnames: str = opt(None, "data", "class-name file: one name a line in index order, or "
                          "'WNID NAME' lines (needed for imagenet-a/-r as class folders)")
    limit: int = opt(None, "data", f"evaluate this many images, spread over the set (default: "
                     f"all; {clip_data.TOY_SIZE} for the toy sets)")
    seed: int = opt(0, "data", "seed of the views, the groups and the toy images")
    # views (TPT's)
    views: int = opt(64, "views", "views per image: the image itself + random resized crops "
                     "and flips (TPT: 64)")
    confident: float = opt(0.1, "views", "share of the views kept, those of lowest entropy "
                           "(TPT: 0.1)")
    # GRPO-TTA
    group_size: int = opt(5, "GRPO-TTA", "K, class candidates per group, drawn from pi_old")
    sampling: str = opt("without-replacement", "GRPO-TTA", "how the K candidates are drawn "
                        "from pi_old", ["without-replacement", "with-replacement", "top-k"])
    dispersion_weight: float = opt(1.0, "GRPO-TTA", "weight of the dispersion reward next to "
                                   "the alignment reward")
    clip_eps: float = opt(0.2, "GRPO-TTA", "importance-ratio clip (grpo.grpo_loss)")
    beta: float = opt(0.001, "GRPO-TTA", "KL coefficient to the zero-shot CLIP (k3, grpo.grpo_loss)")
    # optimisation (GRPO-TTA and TPT alike)
    params: str = opt("layernorm", "optimisation", "visual parameters tuned: layernorm (the "
                      "vision tower's LayerNorm scales and shifts) or tower (all of the vision "
                      "tower and its projection, as RLCF)", ["layernorm", "tower"])
    lr: float = opt(5e-4, "optimisation", "AdamW learning rate")
    weight_decay: float = opt(0.0, "optimisation", "AdamW weight decay")
    steps: int = opt(3, "optimisation", "AdamW steps per image")
    reset: bool = opt(True, "optimisation", "episodic: weights and AdamW state restored before "
                      "every image (--no-reset: continual, each method keeps its own weights)")
    # output
    output_dir: str = opt(None, "output", "run directory (default: runs/<time>-<model>-<data>)")
    overwrite: bool = opt(False, "output", "replace an existing run directory: the old one is "
                          "moved aside to DIR.replaced-<time> (never deleted)")
    quiet: bool = opt(False, "output", "no progress bar")


# The tiny CLIP is ~10,000x smaller than ViT-B/16; used only with --model tiny-clip, for settings
# the command line leaves at their default. docs/grpo-tta.md says how they were chosen.
TINY_PRESETS = dict(lr=0.3)

RANGES = dict(
    limit=(lambda v: v >= 1, "an integer >= 1"),
    views=(lambda v: v >= 2, "an integer >= 2 (TPT: 64)"),
    confident=(lambda v: 0 < v <= 1, "a number in (0, 1] (TPT: 0.1)"),
    group_size=(lambda v: v >= 2, "an integer >= 2: a group of one has advantage 0 (eq. 2)"),
    dispersion_weight=(lambda v: v >= 0, "a number >= 0"),
    clip_eps=(lambda v: v > 0, "a number > 0"),
    beta=(lambda v: v >= 0, "a number >= 0 (0 drops the KL term)"),
    lr=(lambda v: v > 0, "a number > 0"),
    weight_decay=(lambda v: v >= 0, "a number >= 0"),
    steps=(lambda v: v >= 1, "an integer >= 1"),
)


def check(cfg: TTAConfig) -> str | None:
    """The first problem with the settings as one sentence saying what to pass, else None: a
    number out of RANGES or not finite (config.check_numbers), the dataset's name, the device."""
    return (check_numbers(dataclasses.asdict(cfg), RANGES) or clip_data.check_name(cfg.dataset)
            or check_device(cfg.device))


def fit_group(cfg: TTAConfig, classes: int, log=print) -> TTAConfig:
    """`cfg` for a dataset of `classes` classes: a group of K distinct candidates (without
    replacement, or top-k) needs K classes, so with fewer the group is all of them, said in one
    line (our reading of "top-K candidates"); fewer than 2 classes is a DataError."""
    from data import DataError
    if classes < 2:
        raise DataError(f"{cfg.dataset} has {classes} class{'es' if classes != 1 else ''}; CLIP "
                        "adaptation needs at least 2 to choose from: add class folders.")
    if classes >= cfg.group_size or cfg.sampling == "with-replacement":
        return cfg
    log(f"note: {cfg.dataset} has {classes} classes, fewer than --group-size {cfg.group_size}; "
        f"each group is all {classes} of them.")
    return dataclasses.replace(cfg, group_size=classes)


def needs_hub(cfg: TTAConfig) -> bool:
    """Whether the model or the dataset is named by a hub id (nothing built or read locally)."""
    local_data = cfg.dataset in clip_data.TOY or cfg.dataset.startswith("folder:") or cfg.data_dir
    return (cfg.model != TINY_CLIP and not os.path.exists(cfg.model)) or not local_data


def parse_args(argv=None) -> TTAConfig:
    """TTAConfig from the command line, checked; a bad setting ends in one sentence, exit 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     usage="%(prog)s [options]   (see --help)")
    groups = {}
    for f in dataclasses.fields(TTAConfig):
        meta = f.metadata
        group = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        if f.type is bool:
            kw = dict(action=argparse.BooleanOptionalAction)
        else:
            kw = dict(type=f.type, choices=meta["choices"])
        text = meta["help"]
        if f.type is bool:
            text += f" (default: {flag(f.name) if f.default else '--no-' + flag(f.name)[2:]})"
        elif "default" not in text and f.default is not None:
            extra = f"; {TINY_PRESETS[f.name]} for --model tiny-clip" if f.name in TINY_PRESETS else ""
            text += f" (default: {f.default}{extra})"
        group.add_argument(flag(f.name), dest=f.name, default=f.default, help=text, **kw)
    known, _ = parser.parse_known_args(argv)
    if known.model == TINY_CLIP:          # presets replace defaults only; flags still win
        parser.set_defaults(**TINY_PRESETS)
    cfg = TTAConfig(**vars(parser.parse_args(argv)))
    problem = check(cfg)
    if problem:
        parser.error(problem)
    return cfg
