"""The model seam: every line that knows what kind of model we run (a vision-language model or a
text-only causal LM).

The algorithm (grpo.py, rollout.py, ttrv.py) sees a Hugging Face model and a dict of prompt
tensors. This module loads a model through the Auto classes, turns (image, question) pairs into
chat-formatted, left-padded prompt tensors (image None: a text-only prompt, with TTRL's suffix),
repeats and splits those tensors per prompt, names the tokens that end a response, and decodes.
Each family's protocol (which parameters train, how images are cut, temperatures) is
harness/families.py's; model-card names and the hub, harness/models.py's.

    model, processor = load(name, device="cuda", dtype=torch.float32)
    inputs = prompt_inputs(processor, images, questions)   # input_ids [B, P] left padded, ...
    inputs_n = repeat_inputs(inputs, n)                   # each prompt n times, [B*n, P]

Supported and tested (tiny models and models built from the real checkpoints' files):
  * Qwen2.5-VL, Qwen2-VL: pixel_values [patches, 1176], image i owning image_grid_thw[i].prod()
    rows.
  * InternVL (transformers' InternVLForConditionalGeneration, the "-hf" checkpoints): pixel_values
    [tiles, 3, 448, 448], 256 <IMG_CONTEXT> tokens per tile, so prompts own different row counts.
  * Text-only causal LMs (AutoModelForCausalLM, e.g. Qwen2.5-Math): the processor is the tokenizer.
`prompt_inputs` returns a `PromptInputs`: exactly the processor's tensors plus, as an attribute
the model never sees, `pixel_rows`: the rows of pixel_values each prompt owns. What it leaves
out: several images per prompt, video.
"""

from pathlib import Path

import torch
from safetensors import SafetensorError

# Text-only prompts (TTRL): the problem as the user turn of the model's own template, plus this
# suffix unless the template already asks for \boxed{} (Qwen2.5-Math's system prompt; ours: read
# off the template, not the name, so an adapted copy saved under another name keeps its prompt).
TTRL_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


class ModelError(Exception):
    """A model problem the user can fix; the message says how."""


def _looks_local(name: str) -> bool:
    """A path on this machine rather than a hub id."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def tokenizer_of(processor):
    """The tokenizer inside a VLM's processor, or the processor itself (a text model's)."""
    return getattr(processor, "tokenizer", processor)


def load_processor(name: str):
    """AutoProcessor (a text model's: its tokenizer), left padding, checked for a chat template."""
    from transformers import AutoProcessor
    try:
        processor = AutoProcessor.from_pretrained(name)
    except OSError as e:
        raise ModelError(_load_failure(name, e)) from e
    tokenizer = tokenizer_of(processor)
    if not (getattr(processor, "chat_template", None) or tokenizer.chat_template):
        raise ModelError(f"{name} has no chat template, so ttrv cannot write its prompts; use a "
                         "checkpoint whose tokenizer_config.json defines one (e.g. a *-Instruct "
                         "model or Qwen2.5-Math).")
    tokenizer.padding_side = "left"  # generation appends on the right
    return processor


def auto_class(config):
    """AutoModelForImageTextToText for a VLM's config, AutoModelForCausalLM for a text model's."""
    import transformers as tf
    for auto in (tf.AutoModelForImageTextToText, tf.AutoModelForCausalLM):
        if type(config) in auto._model_mapping:
            return auto
    raise ModelError(f"{getattr(config, 'name_or_path', '') or 'this model'} "
                     f"({config.model_type}) is neither an image-text-to-text model nor a causal "
                     "LM; pass a model such as Qwen/Qwen2.5-VL-3B-Instruct or "
                     "Qwen/Qwen2.5-Math-1.5B to --model.")


def load_model(name: str, device: str, dtype: torch.dtype):
    """The model (auto_class) on `device` in `dtype`, or a ModelError saying what to do."""
    from transformers import AutoConfig
    try:
        model = auto_class(AutoConfig.from_pretrained(name)).from_pretrained(name, dtype=dtype)
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise ModelError(f"{name} is not a model transformers knows; pass a vision-language "
                             "model or a causal LM to --model.") from e
        if "Unrecognized model" in str(e):         # a config.json without a model_type
            raise ModelError(f"{name} has no model config (config.json with a model_type); pass "
                             "a model directory or a hub id to --model.") from e
        raise
    except OSError as e:
        raise ModelError(_load_failure(name, e)) from e
    except SafetensorError as e:                   # e.g. a truncated download
        raise ModelError(f"The weights of {name} cannot be read ({e}); they are probably "
                         "incomplete: download the model again (or delete that directory).") from e
    return model.to(device)


def _load_failure(name: str, error: Exception) -> str:
    if _looks_local(name):
        return f"Could not load a model from {name} ({error.__class__.__name__}); check the path."
    return (f"Could not fetch {name} from the Hugging Face hub (no network, or no such model); "
            f"download it elsewhere (huggingface-cli download {name} --local-dir DIR) and pass "
            "DIR to --model.")


def load(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(model, processor); the processor first, so a missing chat template ends before weights."""
    processor = load_processor(name)
    return load_model(name, device, dtype), processor


class PromptInputs(dict):
    """The processor's tensors (every key goes to the model as is) plus `pixel_rows`: how many
    rows of pixel_values each prompt owns, as a list [B] (an attribute the model never sees)."""
    pixel_rows = None

    @classmethod
    def of(cls, tensors: dict, pixel_rows=None) -> "PromptInputs":
        out = cls(tensors)
        out.pixel_rows = pixel_rows
        return out


def prompt_suffix(processor) -> str:
    """TTRL's suffix for text-only prompts, or "" when the template's own turns (Qwen2.5-Math's
    default system prompt) already ask for \\boxed{}."""
    rendered = processor.apply_chat_template([{"role": "user", "content": "Q"}],
                                             add_generation_prompt=True, tokenize=False)
    return "" if "\\boxed" in rendered else TTRL_SUFFIX


def prompt_inputs(processor, images, questions) -> PromptInputs:
    """Chat-formatted, left-padded prompt tensors for (image, question) pairs, one image each
    (all None: text-only prompts, the question plus `prompt_suffix`). One user turn, image then
    question, no system turn (the template adds its own default, if any), ending with the
    assistant header. Example (InternVL, a 640x480 and a 256x256 image): input_ids [2, P] holding
    13*256 and 1*256 <IMG_CONTEXT>; pixel_values [14, 3, 448, 448]; pixel_rows [13, 1]."""
    images = list(images)
    if all(i is None for i in images):
        suffix = prompt_suffix(processor)
        texts = [processor.apply_chat_template([{"role": "user", "content": q + suffix}],
                                               add_generation_prompt=True, tokenize=False)
                 for q in questions]
        if processor is tokenizer_of(processor):    # the template wrote BOS etc. already
            return PromptInputs.of(dict(processor(texts, padding=True, return_tensors="pt",
                                                  add_special_tokens=False)))
        return PromptInputs.of(dict(processor(text=texts, padding=True, return_tensors="pt")))
    if any(i is None for i in images):
        raise ModelError("A batch mixes questions with and without an image; ttrv needs one kind "
                         "per dataset (check the dataset's image column).")
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
        add_generation_prompt=True, tokenize=False) for q in questions]
    # how the family cuts images (InternVL's tiles), set at load by harness/families.py
    inputs = dict(processor(text=texts, images=list(images), padding=True, return_tensors="pt",
                            **getattr(processor, "image_kwargs", {})))  # a list of PIL images
    return PromptInputs.of(inputs, _pixel_rows(processor, inputs))


def example_inputs(processor, examples) -> PromptInputs:
    """`prompt_inputs` of a list of data.Examples: their images and questions."""
    return prompt_inputs(processor, [e.image() for e in examples], [e.question for e in examples])


def _pixel_rows(processor, inputs):
    """Rows of pixel_values per prompt, from what the processor returned (None: no images)."""
    if "pixel_values" not in inputs:
        return None
    if "image_grid_thw" in inputs:                    # Qwen-VL: patches per image, one each
        rows = inputs["image_grid_thw"].prod(-1).tolist()
    elif getattr(processor, "image_seq_length", None) and hasattr(processor, "image_token_id"):
        # InternVL: a fixed number of image tokens per tile, so tiles = image tokens / that
        image_tokens = (inputs["input_ids"] == processor.image_token_id).sum(-1)   # [B]
        rows = (image_tokens // processor.image_seq_length).tolist()
    else:
        return None                                   # one row per prompt, or not known
    if sum(rows) != inputs["pixel_values"].shape[0]:
        raise ModelError(f"The processor returned {inputs['pixel_values'].shape[0]} image rows "
                         f"but its prompts account for {sum(rows)}; ttrv supports one image per "
                         "prompt (check the dataset's images and the processor's settings).")
    return rows


def _rows_per_prompt(inputs: dict):
    """pixel_rows of a PromptInputs, else what the tensors alone say (None: no pixel_values)."""
    if "pixel_values" not in inputs:
        return None
    rows = getattr(inputs, "pixel_rows", None)
    if rows is not None:
        return list(rows)
    batch, total = inputs["input_ids"].shape[0], inputs["pixel_values"].shape[0]
    if "image_grid_thw" in inputs:                    # Qwen-VL: patches per image
        return inputs["image_grid_thw"].prod(-1).tolist()
    if batch == 1:                                    # one prompt owns every row
        return [total]
    if total == batch:                                # one row per prompt (LLaVA-style)
        return [1] * batch
    raise ModelError(f"Do not know which of the {total} pixel_values rows belong to which of the "
                     f"{batch} prompts; build the inputs with vlm.prompt_inputs (it records "
                     "pixel_rows), or add this family to vlm._pixel_rows.")


def repeat_inputs(inputs: dict, n: int) -> PromptInputs:
    """Each prompt's tensors n times in a row (row b*n + j is copy j of prompt b).

    Example: pixel_rows [13, 1], n = 2 -> pixel_values rows [13, 13, 1, 1] (each prompt's own
    tiles or patches stay with it), pixel_rows [13, 13, 1, 1].
    """
    batch = inputs["input_ids"].shape[0]
    rows = _rows_per_prompt(inputs)
    out = {}
    for key, value in inputs.items():
        if not torch.is_tensor(value):
            out[key] = value
        elif key == "pixel_values":
            out[key] = torch.cat([c for c in value.split(rows) for _ in range(n)])
        elif value.shape[0] == batch:
            out[key] = value.repeat_interleave(n, dim=0)
        else:
            raise ModelError(f"Do not know how to repeat {key} of shape {tuple(value.shape)}; "
                             "this model family needs a branch in vlm.repeat_inputs.")
    return PromptInputs.of(out, rows and [r for r in rows for _ in range(n)])


def split_inputs(inputs: dict) -> list[PromptInputs]:
    """One PromptInputs per prompt (batch 1), its left padding removed."""
    batch = inputs["input_ids"].shape[0]
    rows = _rows_per_prompt(inputs)
    pixels = inputs["pixel_values"].split(rows) if rows else None
    out = []
    for b in range(batch):
        keep = inputs["attention_mask"][b].bool()
        one = {}
        for key, value in inputs.items():
            if key == "pixel_values":
                one[key] = pixels[b]
            elif torch.is_tensor(value) and value.shape[:2] == inputs["input_ids"].shape:
                one[key] = value[b:b + 1, keep]              # per-token tensors: drop padding
            elif torch.is_tensor(value) and value.shape[0] == batch:
                one[key] = value[b:b + 1]
            else:
                raise ModelError(f"Do not know how to split {key}; this model family needs a "
                                 "branch in vlm.split_inputs.")
        out.append(PromptInputs.of(one, rows and [rows[b]]))
    return out


def to_device(inputs: dict, device) -> dict:
    """The same inputs (a PromptInputs keeps its pixel_rows) with every tensor on `device`."""
    moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    return PromptInputs.of(moved, getattr(inputs, "pixel_rows", None))


def end_token_ids(model, processor) -> list[int]:
    """Token ids that end a response: the generation config's eos ids, the tokenizer's, and the
    special token the chat template writes after an assistant turn (Qwen2.5-Math's generation
    config stops only on <|endoftext|>, its template ends a turn with <|im_end|>: both stop it)."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    ids += [tokenizer_of(processor).eos_token_id, _turn_end_id(processor)]
    return sorted({i for i in ids if i is not None})


def _turn_end_id(processor):
    """The special token right after an assistant turn's text in the chat template, or None."""
    tokenizer, reply = tokenizer_of(processor), "Rz7q"
    try:
        text = processor.apply_chat_template([{"role": "user", "content": "Q"}, {
            "role": "assistant", "content": reply}], tokenize=False)
    except Exception:           # a template that refuses this conversation: no extra end token
        return None
    ids = tokenizer(text[text.rfind(reply) + len(reply):], add_special_tokens=False)["input_ids"]
    added = tokenizer.added_tokens_decoder.get(ids[0]) if ids else None
    return ids[0] if added is not None and added.special else None


def placeholder_token_ids(model) -> list[int]:
    """Input-only tokens (image/video placeholders) that a sampled response must never hold."""
    config = model.config
    ids = (getattr(config, name, None) for name in ("image_token_id", "video_token_id"))
    return sorted({i for i in ids if isinstance(i, int)})


def pad_token_id(processor) -> int:
    tokenizer = tokenizer_of(processor)
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def decode(processor, completion_ids) -> list[str]:
    """Response texts without special tokens."""
    return tokenizer_of(processor).batch_decode(completion_ids, skip_special_tokens=True)
