"""The model seam: every line that knows what kind of model we run (a vision-language model or a
text-only causal LM).

The algorithm (grpo.py, rollout.py, ttrv.py) sees a Hugging Face model and a dict of
prompt tensors. Everything family-specific stays here: loading a model through the Auto
classes, each family's protocol (which parameters train, how images are cut, the sampling
temperature, TTRL's prompt suffix), turning (image, question) pairs into chat-formatted,
left-padded prompt tensors (image None: a text-only prompt), repeating and splitting those
tensors per prompt, and the end-of-turn token ids. Model-card names and the hub's reachability
are the command lines' business (harness/models.py).

    model, processor = load(name, device="cuda", dtype=torch.float32)
    freeze_vision(model, cfg.freeze_vision)                # None: the family's default
    inputs = prompt_inputs(processor, images, questions)   # input_ids [B, P] left padded, ...
    for inputs in prompt_batches(processor, batches, num_workers=4):   # prepared ahead
    inputs_n = repeat_inputs(inputs, n)                   # each prompt n times, [B*n, P]

Supported and tested (tiny models and models built from the real checkpoints' files, random
weights; no real weights were run here):
  * Qwen2.5-VL, Qwen2-VL: pixel_values [patches, 1176] are the images' patches concatenated,
    image i owning image_grid_thw[i].prod() rows.
  * InternVL (transformers' InternVLForConditionalGeneration, the "-hf" checkpoints, no remote
    code): pixel_values [tiles, 3, 448, 448]; each image is cut into 1-12 tiles plus a thumbnail,
    256 <IMG_CONTEXT> tokens per tile, so prompts own different numbers of rows.
  * Text-only causal LMs (AutoModelForCausalLM, e.g. Qwen2.5-Math): the processor is the
    tokenizer; input_ids and attention_mask only.
`prompt_inputs` returns a `PromptInputs`: a dict of exactly the processor's tensors (all passed
to the model) plus, as an attribute the model never sees, `pixel_rows`: the rows of
pixel_values each prompt owns. Models whose pixel_values have one row per prompt (e.g.
LLaVA-style) need nothing more. What it leaves out: several images per prompt, video.
"""

import os
from pathlib import Path

import torch
from safetensors import SafetensorError

CPU_PARAM_LIMIT = 1_000_000_000  # above this, refuse to train on a CPU unless asked

# The language model's attention and MLP projections (Qwen2 / Llama blocks): where --lora-rank
# puts its adapters (harness/lora.py) unless a family lists its own `lora_modules`. A family whose
# vision tower trains also gets adapters on every linear layer of the tower.
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Each family's protocol, as the official runs set it; keyed by config.model_type. Families
# not listed get the defaults (vision trains, the template's own system prompt, the
# processor's own image settings, LORA_MODULES).
FAMILIES = {
    # Every Qwen2.5-VL log of the official runs samples at 1.5 (run.sh and the paper say 1.0).
    "qwen2_5_vl": dict(official_temperature=1.5),
    "internvl": dict(
        official_temperature=1.0,          # the InternVL logs sample at 1.0
        # The official code freezes InternVL's vision tower (the projector trains).
        freeze_vision=True,
        # LoRA: the Qwen2 text model's projections and the projector's two layers, which the
        # official protocol trains (our choice: adapters there rather than full weights).
        lora_modules=LORA_MODULES + ("linear_1", "linear_2"),
        # Up to 12 tiles plus a thumbnail, as InternVL3 was trained and evaluated (the
        # checkpoint's preprocessor_config says crop_to_patches false; InternVLProcessor turns
        # it on itself, and we pass all three explicitly so neither default decides).
        image_kwargs=dict(crop_to_patches=True, min_patches=1, max_patches=12),
        processor="InternVLProcessor",
    ),
}
# No system prompt for InternVL: the official runs use none, and the -hf chat template adds
# none (Qwen's template adds "You are a helpful assistant." itself, as in its official runs).
# prompt_inputs never writes a system turn, so each family gets its own template's behaviour.

# Text-only prompts (TTRL): the bare problem as the user turn of the model's own template, plus
# this suffix for every model but Qwen2.5-Math, whose default system prompt already asks for
# \boxed{}; `prompt_suffix` reads that off the template, not the name (ours: an adapted copy saved
# under another name keeps its prompt).
TTRL_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
TEXT_DEFAULTS = dict(ttrl_temperature=0.6)    # TTRL samples other text models at 0.6
# Text families by a fragment of the checkpoint's name, matched case-insensitively in its
# name_or_path (Qwen2.5, Qwen2.5-Math and tiny-math all have model_type "qwen2").
NAMED_FAMILIES = {"qwen2.5-math": dict(ttrl_temperature=1.0),   # TTRL's Qwen2.5-Math scripts
                  "tiny-math": dict(ttrl_temperature=1.0)}      # its template (tiny_math.py)


class ModelError(Exception):
    """A model problem the user can fix; the message says how."""


def _looks_local(name: str) -> bool:
    """A path on this machine rather than a hub id."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def tokenizer_of(processor):
    """The tokenizer inside a VLM's processor, or the processor itself (a text model's)."""
    return getattr(processor, "tokenizer", processor)


def load_processor(name: str):
    """AutoProcessor (a text model's: its tokenizer) with left padding, checked for a chat
    template."""
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


def count_parameters(name: str) -> int:
    """Parameters of `name`'s architecture, counted on the meta device (nothing allocated)."""
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(name)
    with torch.device("meta"):
        model = auto_class(config).from_config(config)
    return sum(p.numel() for p in model.parameters())


def load_model(name: str, device: str, dtype: torch.dtype, allow_cpu: bool = False):
    """The model (auto_class) on `device` in `dtype`, or a ModelError saying what to do."""
    from transformers import AutoConfig
    try:
        if device == "cpu" and not allow_cpu:
            n = count_parameters(name)
            if n > CPU_PARAM_LIMIT:
                raise ModelError(f"{name} has {n / 1e9:.1f}B parameters and no GPU is in use; run "
                                 "on a CUDA machine, or pass --allow-cpu to try anyway (very slow).")
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


def load(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
         allow_cpu: bool = False):
    """(model, processor) for a hub id or a local directory; the processor first, so a missing
    chat template ends before the weights load."""
    processor = load_processor(name)
    return load_model(name, device, dtype, allow_cpu), processor


def family(model) -> dict:
    """This model's protocol entries: NAMED_FAMILIES by its name, else FAMILIES by model_type;
    a text-only model's over TEXT_DEFAULTS ({} for a VLM without an entry)."""
    config = model.config
    name = str(getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "")).lower()
    text = not any(hasattr(config, k) for k in ("vision_config", "image_token_id"))
    named = next((f for key, f in NAMED_FAMILIES.items() if key in name), None)
    own = named or FAMILIES.get(getattr(config, "model_type", None), {})
    return {**TEXT_DEFAULTS, **own} if text else own


def official_temperature(model) -> float:
    """The sampling temperature of the official runs for this model's family (--protocol
    official): 1.5 for Qwen2.5-VL, 1.0 for InternVL and, as run.sh says, for any other."""
    return family(model).get("official_temperature", 1.0)


def is_vision(name: str) -> bool:
    """Whether a parameter or module name lies in the vision tower (InternVL's `vision_tower`,
    Qwen-VL's `visual` with its merger; InternVL's `multi_modal_projector` is not)."""
    return "visual" in name or "vision" in name


def compute_storage(model, compute_dtype=None):
    """Store `model` (fp32, as loaded) in place as bf16 autocast computes with it.

    With compute_dtype bf16 every linear and convolution layer keeps its weights in bf16 and
    every other parameter (norms, embeddings) stays fp32. Under bf16 autocast that is exactly the
    computation of the fp32 model: autocast runs those layers on bf16 copies of the fp32
    weights, the rest in fp32; at 2 bytes per weight, no copies made per forward. A model stored
    wholly in bf16 would also round its norms and embeddings and carry its residual stream in
    bf16: a slightly different model. Tied embeddings are untied so the lookup stays fp32 while
    the output head is bf16. For frozen weights only: trained ones keep fp32 masters.
    """
    if compute_dtype is not None:
        head, embed = model.get_output_embeddings(), model.get_input_embeddings()
        if head is not None and embed is not None and head.weight is embed.weight:
            embed.weight = torch.nn.Parameter(embed.weight.detach().clone(),
                                              requires_grad=embed.weight.requires_grad)
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
                m.to(compute_dtype)
    return model


def frozen_reference(model, compute_dtype=None):
    """The frozen reference of eq. (1) from an fp32 model: stored as autocast computes
    (compute_storage), so at step 0 it is the policy's own computation, eval mode, no grads."""
    return compute_storage(model, compute_dtype).eval().requires_grad_(False)


def ttrl_temperature(model) -> float:
    """TTRL's rollout temperature (--protocol ttrl): 1.0 for Qwen2.5-Math, 0.6 for other text
    models (TTRL's scripts); a VLM without an entry: 1.0, the paper's."""
    return family(model).get("ttrl_temperature", 1.0)


def freeze_vision(model, freeze=None) -> bool:
    """Freeze the vision tower's parameters (`freeze` None: the family's default); returns
    whether it froze them. The rule is by parameter name: InternVL's `vision_tower` freezes and
    its `multi_modal_projector` trains; Qwen-VL's `visual` holds its merger, which freezes too.
    """
    if freeze is None:
        freeze = family(model).get("freeze_vision", False)
    if freeze:
        for name, p in model.named_parameters():
            if is_vision(name):
                p.requires_grad_(False)
    return freeze


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
    """Chat-formatted, left-padded prompt tensors for (image, question) pairs, one image each;
    images all None: text-only prompts.

    Each prompt is one user turn holding the image then the question, and no system turn (the
    family's template adds its own default, if any); the chat template puts the model's own
    image placeholder where the paper's prompts write "<image>", and ends with the assistant
    header so generation starts the answer. Example (InternVL, a 640x480 and a 256x256 image):
    input_ids [2, P] holding 13*256 and 1*256 <IMG_CONTEXT>; pixel_values [14, 3, 448, 448];
    pixel_rows [13, 1]. A text-only prompt: the question plus `prompt_suffix` (TTRL).
    """
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
    image_kwargs = next((f["image_kwargs"] for f in FAMILIES.values()
                         if f.get("processor") == type(processor).__name__), {})
    inputs = dict(processor(text=texts, images=list(images), padding=True, return_tensors="pt",
                            **image_kwargs))  # images: a list of PIL images
    return PromptInputs.of(inputs, _pixel_rows(processor, inputs))


class _Prompts:
    """A DataLoader collate: a list of examples -> their PromptInputs. A DataError (a corrupt
    image) or ModelError comes back as the value, so it surfaces in the main process as its own
    one sentence, not wrapped in a worker's traceback."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples):
        try:
            return prompt_inputs(self.processor, [e.image() for e in examples],
                                 [e.question for e in examples])
        except ModelError as e:
            return e
        except Exception as e:  # noqa: BLE001  (returned only if the user can fix it)
            import data
            if isinstance(e, data.DataError):
                return e
            raise


def prompt_batches(processor, batches, num_workers: int = 0):
    """The PromptInputs of each list of examples in `batches`, in order, prepared ahead.

    With num_workers > 0, `num_workers` torch DataLoader worker processes decode the images and
    run the processor (`prompt_inputs` is the collate) for the next batches while the caller's
    model works on this one; 0 prepares each batch in this process when it is asked for. Either
    way the tensors are the same. Raises a batch's DataError when that batch is reached.
    """
    collate = _Prompts(processor)
    if not num_workers:
        items = map(collate, batches)
    else:
        from torch.utils.data import DataLoader
        # the workers are forked: a tokenizer that used its threads would warn in each of them
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # its own generator: the workers' seeds are not drawn from torch's global one (sampling)
        items = iter(DataLoader(batches, batch_size=None, collate_fn=collate,
                                num_workers=num_workers, generator=torch.Generator()))
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


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
