"""The model seam: every line that knows what kind of vision-language model we run.

The algorithm (grpo.py, shared_prefix.py, ttrv.py) sees a Hugging Face model and a dict of
prompt tensors. Everything family-specific stays here: resolving a model name, loading it
through the Auto classes, turning (image, question) pairs into chat-formatted, left-padded
prompt tensors, repeating those tensors per rollout, and the end-of-turn token ids.

    model, processor = load(name, device="cuda", dtype=torch.float32)
    inputs = prompt_inputs(processor, images, questions)   # input_ids [B, P] left padded, ...
    inputs_n = repeat_inputs(inputs, n)                   # each prompt n times, [B*n, P]

Supported and tested: Qwen2.5-VL and Qwen2-VL (pixel_values are the images' patches
concatenated, image i owning image_grid_thw[i].prod() rows). Models whose pixel_values have one
row per prompt (e.g. LLaVA-style) repeat along dim 0. Other layouts (InternVL's per-image tiles)
need one branch in `repeat_inputs`; nothing else in the project changes.
"""

from pathlib import Path

import torch

# Names people type that are not hub ids (the model card says "Qwen2.5-VL-3B").
ALIASES = {
    "Qwen/Qwen2.5-VL-3B": "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2.5-VL-7B": "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen2-VL-2B": "Qwen/Qwen2-VL-2B-Instruct",
}
CPU_PARAM_LIMIT = 1_000_000_000  # above this, refuse to train on a CPU unless asked


class ModelError(Exception):
    """A model problem the user can fix; the message says how."""


def resolve_name(name: str, log=print) -> str:
    """Map a model-card name to its hub id (printing that it did); other names pass through."""
    if name in ALIASES:
        log(f"note: {name} is not a hub id; using {ALIASES[name]}")
        return ALIASES[name]
    return name


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def load_processor(name: str):
    """AutoProcessor with left padding, checked for a chat template."""
    from transformers import AutoProcessor
    try:
        processor = AutoProcessor.from_pretrained(name)
    except OSError as e:
        raise ModelError(_load_failure(name, e)) from e
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or not hasattr(processor, "image_processor"):
        raise ModelError(f"{name} has no image processor and tokenizer pair, so it is not a "
                         "vision-language model; pass an image-text-to-text model to --model.")
    if not (processor.chat_template or tokenizer.chat_template):
        raise ModelError(f"{name} has no chat template; use an instruction-tuned checkpoint "
                         "(e.g. a *-Instruct model) whose processor defines one.")
    tokenizer.padding_side = "left"  # generation appends on the right
    return processor


def count_parameters(name: str) -> int:
    """Parameters of `name`'s architecture, counted on the meta device (nothing allocated)."""
    from transformers import AutoConfig, AutoModelForImageTextToText
    config = AutoConfig.from_pretrained(name)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return sum(p.numel() for p in model.parameters())


def load_model(name: str, device: str, dtype: torch.dtype, allow_cpu: bool = False):
    """AutoModelForImageTextToText on `device` in `dtype`, or a ModelError saying what to do."""
    from transformers import AutoModelForImageTextToText
    try:
        if device == "cpu" and not allow_cpu:
            n = count_parameters(name)
            if n > CPU_PARAM_LIMIT:
                raise ModelError(f"{name} has {n / 1e9:.1f}B parameters and no GPU is in use; run "
                                 "on a CUDA machine, or pass --allow-cpu to try anyway (very slow).")
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype)
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise ModelError(f"{name} is not an image-text-to-text model; pass a vision-language "
                             "model such as Qwen/Qwen2.5-VL-3B-Instruct to --model.") from e
        raise
    except OSError as e:
        raise ModelError(_load_failure(name, e)) from e
    return model.to(device)


def _load_failure(name: str, error: Exception) -> str:
    if _looks_local(name):
        return f"Could not load a model from {name} ({error.__class__.__name__}); check the path."
    return (f"Could not fetch {name} from the Hugging Face hub (no network, or no such model); "
            f"download it elsewhere (huggingface-cli download {name} --local-dir DIR) and pass "
            "DIR to --model.")


def load(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
         allow_cpu: bool = False):
    """(model, processor) for a hub id or a local directory."""
    return load_model(name, device, dtype, allow_cpu), load_processor(name)


def prompt_inputs(processor, images, questions) -> dict:
    """Chat-formatted, left-padded prompt tensors for (image, question) pairs.

    Each prompt is one user turn holding the image then the question; the chat template puts
    the model's own image placeholder where the paper's prompts write "<image>", and ends with
    the assistant header so generation starts the answer.
    """
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
        add_generation_prompt=True, tokenize=False) for q in questions]
    return dict(processor(text=texts, images=list(images), padding=True, return_tensors="pt"))


def repeat_inputs(inputs: dict, n: int) -> dict:
    """Each prompt's tensors n times in a row (row b*n + j is copy j of prompt b)."""
    batch = inputs["input_ids"].shape[0]
    out = {}
    for key, value in inputs.items():
        if not torch.is_tensor(value):
            out[key] = value
        elif key == "pixel_values" and "image_grid_thw" in inputs:  # Qwen-VL: patches per image
            rows = inputs["image_grid_thw"].prod(-1).tolist()
            out[key] = torch.cat([c for c in value.split(rows) for _ in range(n)])
        elif value.shape[0] == batch:
            out[key] = value.repeat_interleave(n, dim=0)
        else:
            raise ModelError(f"Do not know how to repeat {key} of shape {tuple(value.shape)}; "
                             "this model family needs a branch in vlm.repeat_inputs.")
    return out


def split_inputs(inputs: dict) -> list[dict]:
    """One dict per prompt (batch 1), its left padding removed."""
    batch = inputs["input_ids"].shape[0]
    rows = (inputs["image_grid_thw"].prod(-1).tolist() if "image_grid_thw" in inputs else None)
    pixels = (inputs["pixel_values"].split(rows) if rows else None)
    out = []
    for b in range(batch):
        keep = inputs["attention_mask"][b].bool()
        one = {}
        for key, value in inputs.items():
            if key == "pixel_values" and pixels is not None:
                one[key] = pixels[b]
            elif torch.is_tensor(value) and value.shape[:2] == inputs["input_ids"].shape:
                one[key] = value[b:b + 1, keep]              # per-token tensors: drop padding
            elif torch.is_tensor(value) and value.shape[0] == batch:
                one[key] = value[b:b + 1]
            else:
                raise ModelError(f"Do not know how to split {key}; this model family needs a "
                                 "branch in vlm.split_inputs.")
        out.append(one)
    return out


def to_device(inputs: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}


def end_token_ids(model, processor) -> list[int]:
    """Token ids that end a response: the generation config's eos ids plus the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if processor.tokenizer.eos_token_id is not None:
        ids.append(processor.tokenizer.eos_token_id)
    return sorted(set(ids))


def placeholder_token_ids(model) -> list[int]:
    """Input-only tokens (image/video placeholders) that a sampled response must never hold."""
    config = model.config
    ids = (getattr(config, name, None) for name in ("image_token_id", "video_token_id"))
    return sorted({i for i in ids if isinstance(i, int)})


def pad_token_id(processor) -> int:
    tokenizer = processor.tokenizer
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def decode(processor, completion_ids) -> list[str]:
    """Response texts without special tokens."""
    return processor.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)


def quiet_transformers() -> None:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") and
    its warnings, for the command lines; errors still show. Also silences huggingface_hub's bars."""
    from transformers.utils import logging
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def work_offline_if_hub_unreachable(log=print, timeout: float = 3.0) -> bool:
    """Switch huggingface_hub to offline mode when its host cannot be reached, so a hub id fails
    at once (cached files still load) instead of after five retries and ~25 s of retry lines.

    Skipped when HF_HUB_OFFLINE is already set or a proxy is configured (a direct connection
    says nothing then). Returns True when it switched.
    """
    import os
    import socket
    from urllib.parse import urlparse
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
