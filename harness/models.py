"""Model names and the hub, for the command lines: model-card names to hub ids, checkpoints that
cannot load, transformers kept quiet, offline mode when the hub cannot be reached.

    name = resolve_name("InternVL3-2B")          # -> "OpenGVLab/InternVL3-2B-hf" (says so)
    check_local(name)                           # a local path must be a model directory
    quiet_transformers()                        # no progress bars or warnings from transformers
    work_offline_if_hub_unreachable()           # a hub id fails at once, cached files still load
    model, processor = load(name, "cuda", torch.float32)   # vlm.load + the family's image tiling

None of this knows what a model does; the model seam is vlm.py.
"""

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import vlm
from harness import families
from vlm import ModelError, _looks_local

CPU_PARAM_LIMIT = 1_000_000_000  # above this, refuse to train on a CPU unless asked (--allow-cpu)

# Names people type that are not hub ids (the model cards and the paper say "Qwen2.5-VL-3B",
# "InternVL3-2B"). InternVL: the "-hf" conversions load through transformers' own classes;
# OpenGVLab/InternVL3-2B-hf and -8B-hf are listed on the hub (transformers' InternVL docs and
# model pages); no InternVL2.5-4B "-hf" conversion was found (see MISSING).
ALIASES = {
    "Qwen/Qwen2.5-VL-3B": "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2.5-VL-7B": "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen2-VL-2B": "Qwen/Qwen2-VL-2B-Instruct",
    **{f"{prefix}InternVL3-{size}": f"OpenGVLab/InternVL3-{size}-hf"
       for prefix in ("", "OpenGVLab/") for size in ("2B", "8B")},
}
# Paper names with no transformers-format ("-hf") checkpoint on the hub, as far as public
# sources show: the original repos need trust_remote_code, which ttrv does not use.
MISSING = {
    f"{prefix}{name}": "OpenGVLab/InternVL2_5-4B"
    for prefix in ("", "OpenGVLab/") for name in ("InternVL2.5-4B", "InternVL2_5-4B")
}


def load(name: str, device: str = "cpu", dtype=None, allow_cpu: bool = False):
    """vlm.load for a run: a model over CPU_PARAM_LIMIT parameters refused on the CPU unless
    `allow_cpu` (before its weights load), the processor given its family's image tiling."""
    import torch
    processor = vlm.load_processor(name)        # a missing chat template ends first
    if device == "cpu" and not allow_cpu:
        n = count_parameters(name)
        if n is not None and n > CPU_PARAM_LIMIT:
            raise ModelError(f"{name} has {n / 1e9:.1f}B parameters and no GPU is in use; run "
                             "on a CUDA machine, or pass --allow-cpu to try anyway (very slow).")
    model = vlm.load_model(name, device, dtype or torch.float32)
    return model, families.set_tiling(processor)


def count_parameters(name: str) -> int | None:
    """Parameters of `name`'s architecture, counted on the meta device (nothing allocated);
    None when its config cannot be read (vlm.load_model then says why in one sentence)."""
    import torch
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return None
    with torch.device("meta"):
        model = vlm.auto_class(config).from_config(config)
    return sum(p.numel() for p in model.parameters())


def resolve_name(name: str, log=print) -> str:
    """Map a model-card name to its hub id (printing that it did); other names pass through.

    Example: "InternVL3-2B" -> "OpenGVLab/InternVL3-2B-hf"; "InternVL2.5-4B" -> ModelError
    (no transformers-format checkpoint to load).
    """
    if name in MISSING:
        raise ModelError(f"{name} has no transformers-format (-hf) checkpoint on the hub (only "
                         f"{MISSING[name]}, which needs trust_remote_code); convert it with "
                         "transformers' InternVL conversion script (convert_internvl_weights_to_hf"
                         ".py) and pass the output directory to --model.")
    if name in ALIASES:
        log(f"note: {name} is not a hub id; using {ALIASES[name]}")
        return ALIASES[name]
    return name


def check_local(name: str) -> None:
    """Nothing, or a ModelError in one sentence when `name` is a path on this machine that
    cannot be a model: missing, a file, a directory without config.json, or a config.json
    without a model_type (a ttrv run directory's own config.json is one). Reads one small file,
    so it runs before any data or weights load; hub ids pass (the hub is asked later)."""
    if not _looks_local(name):
        return
    path = Path(name).expanduser()
    if not path.exists():
        raise ModelError(f"--model {name} does not exist; pass a model directory (one holding "
                         "config.json and the weights) or a hub id.")
    if not path.is_dir():
        raise ModelError(f"--model {name} is a file; pass the directory that holds the model's "
                         "config.json and weights.")
    config = path / "config.json"
    if not config.exists():
        raise ModelError(f"{name} holds no config.json, so it is not a model directory; pass the "
                         "directory that save_pretrained or `huggingface-cli download` wrote.")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise ModelError(f"{config} cannot be read as a model config ({type(e).__name__}); the "
                         "download is probably incomplete: download the model again.") from e
    if model_type:
        return
    if (path / "status.json").exists() or (path / "metrics.jsonl").exists():
        raise ModelError(f"{name} is a ttrv run directory, not a model; pass its saved model, "
                         f"--model {path / 'model'} (or seed-*/model).")
    raise ModelError(f"{config} has no model_type, so it is not a transformers model's config; "
                     "pass a model directory or a hub id.")


def quiet_transformers() -> None:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") and
    its warnings, for the command lines; errors still show. Also silences huggingface_hub's bars."""
    from transformers.utils import logging
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def work_offline_if_hub_unreachable(log=print, timeout: float = 3.0) -> bool:
    """Switch huggingface_hub to offline mode when its host cannot be reached, so a hub id fails
    at once (cached files still load) instead of after the hub client's retries.

    Skipped when HF_HUB_OFFLINE is already set or a proxy is configured (a direct connection
    says nothing then). Returns True when it switched.
    """
    proxies = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")
    if os.environ.get("HF_HUB_OFFLINE") or any(os.environ.get(p) for p in proxies):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname
    try:
        socket.create_connection((host, url.port or (80 if url.scheme == "http" else 443)),
                                 timeout=timeout).close()
        return False
    except OSError:
        pass
    os.environ["HF_HUB_OFFLINE"] = "1"              # read at import by huggingface_hub ...
    from huggingface_hub import constants
    constants.HF_HUB_OFFLINE = True                 # ... and by is_offline_mode() at call time
    log(f"note: {host} cannot be reached; working offline (only locally cached files load)")
    return True
