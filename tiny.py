"""A tiny vision-language model built offline, so ttrv runs and tests without the hub.

`python ttrv.py` (no arguments) and the test suite need a real Hugging Face VLM, but this
workplace (and many laptops) cannot download one. This file builds a few-layer Qwen2.5-VL
(or Qwen2-VL) with random weights, a small byte-level BPE tokenizer trained here with the
`tokenizers` library, the real Qwen2-VL image processor and a Qwen-style chat template, and
writes it with `save_pretrained`. ttrv then loads it back through exactly the same
`AutoProcessor` / `AutoModelForImageTextToText.from_pretrained` path as a hub checkpoint.

    build_tiny_model(dir)                 # random weights, seconds
    teach_shapes(dir)                     # brief supervised warm-up on shapes' train split
    tiny_model_path()                     # both, cached in the user cache directory

What it leaves out: the tiny model knows nothing of language; it only learns to answer the
shapes task with one option letter. It is a stand-in that exercises every code path, not a
model whose numbers mean anything about the paper's.
"""

import os
from pathlib import Path

import torch

# ---------------------------------------------------------------------------------------------
# Tiny model hyperparameters (all in one place). Head dim 16 -> mrope sections sum to 8.
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096)
MROPE_SECTION = [2, 3, 3]        # temporal, height, width rotary sections (sum = head_dim / 2)
VISION_25 = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                 fullatt_block_indexes=[1], window_size=112)   # Qwen2.5-VL vision tower
VISION_2 = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2)  # Qwen2-VL
VOCAB_SIZE = 512                 # byte-level BPE: any text encodes, no unknown tokens
MAX_IMAGE_PIXELS = 112 * 112     # the image processor resizes to at most 8x8 patches = 16 tokens
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# A Qwen-style chat template written for this project: an image content item becomes
# <|vision_start|><|image_pad|><|vision_end|>, which the processor expands to one pad per patch.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# What the BPE merges are learned from (byte fallback covers everything else). The recognition
# prompt and the shapes' names are weighted so that every word of the shapes questions, and each
# shape name with its leading space (" circle", " crescent"), becomes a single token: prompts are
# shorter (faster) and one token per option makes the letter lookup easier to learn.
_PROMPT_TEXT = (
    "Look at the given image and identify what it shows. Choose the correct answer from the "
    "options below and respond with only the corresponding option letter (A, B, C, or D). "
    "Do not include any explanation or extra text. \n Options:\n")
_SHAPE_NAMES = ["circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "crescent"]
_CORPUS = (
    [_PROMPT_TEXT] * 8
    + ["".join(f"{letter}. {name}\n" for letter, name in zip("ABCD", _SHAPE_NAMES[i:] + _SHAPE_NAMES))
       for i in range(len(_SHAPE_NAMES))] * 8
    + [" ".join(_SHAPE_NAMES)] * 8
    + ["texture airplane airport beach bridge forest river lake", "user\nassistant\nA\nB\nC\nD\n"] * 4
)
CORPUS_REPEATS = 1               # the corpus above is already weighted


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS * CORPUS_REPEATS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", padding_side="left",
                                   model_max_length=4096)


def build_tiny_model(out_dir, arch: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """Write a random-weight tiny VLM (`arch`: "qwen2_5_vl" or "qwen2_vl") to `out_dir`.

    The directory then holds config.json, model.safetensors, tokenizer files, the processor
    config and chat_template.jinja, like any hub checkpoint. Returns the path.
    """
    import transformers as tf

    if arch not in ("qwen2_5_vl", "qwen2_vl"):
        raise ValueError(f"Unknown tiny architecture {arch!r}; use 'qwen2_5_vl' or 'qwen2_vl'.")
    tokenizer = _build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    image_processor = tf.Qwen2VLImageProcessor(
        size={"shortest_edge": 56 * 56, "longest_edge": MAX_IMAGE_PIXELS})
    processor_cls = tf.Qwen2_5_VLProcessor if arch == "qwen2_5_vl" else tf.Qwen2VLProcessor
    processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer,
                              video_processor=tf.Qwen2VLVideoProcessor(),
                              chat_template=CHAT_TEMPLATE)

    text = dict(TEXT, vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": MROPE_SECTION})
    common = dict(text_config=text, image_token_id=ids["<|image_pad|>"],
                  video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"],
                  vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
    if arch == "qwen2_5_vl":
        config = tf.Qwen2_5_VLConfig(vision_config=VISION_25, **common)
        model_cls = tf.Qwen2_5_VLForConditionalGeneration
    else:
        config = tf.Qwen2VLConfig(vision_config=VISION_2, **common)
        model_cls = tf.Qwen2VLForConditionalGeneration
    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def default_cache_dir() -> Path:
    """Where the taught tiny model is cached: $TTRV_CACHE, else ~/.cache/ttrv."""
    return Path(os.environ.get("TTRV_CACHE", Path.home() / ".cache" / "ttrv"))


# ---------------------------------------------------------------------------------------------
# Teaching the tiny model the shapes task, so `python ttrv.py` starts from a model that is
# clearly better than chance and clearly worse than perfect (TTRV needs a usable prior).
TEACH = dict(
    steps=300,          # most optimizer steps (the early stop below usually comes first)
    batch_size=16,      # questions per step
    lr=3e-3,            # AdamW peak learning rate (no weight decay)
    seed=0,             # seeds the hold-out split, batch order and torch
    warmup=20,          # linear warm-up steps, then cosine decay to 0 at `steps`
    holdout=80,         # train-split questions held out for the stopping rule (never trained on)
    target=0.6,         # stop at the first check whose hold-out accuracy >= target ...
    eval_every=20,      # ... checking every eval_every steps
)


def _encode_split(processor, examples):
    """Prompt + answer tensors for every example, once: (input_ids [N, L], attention_mask,
    pixel rows per example, image_grid_thw, answer token ids [N, 2])."""
    import vlm
    prompt = vlm.prompt_inputs(processor, [e.image() for e in examples],
                               [e.question for e in examples])
    end = processor.tokenizer.eos_token
    target = processor.tokenizer([e.answer + end for e in examples], add_special_tokens=False,
                                 return_tensors="pt")["input_ids"]
    rows = prompt["image_grid_thw"].prod(-1).tolist()
    return prompt, list(prompt["pixel_values"].split(rows)), target


def _batch(prompt, pixels, target, index):
    """The training inputs and labels of examples `index`: prompt | answer, loss on the answer."""
    inputs = {}
    for key, value in prompt.items():
        if key == "pixel_values":
            inputs[key] = torch.cat([pixels[i] for i in index])
        else:
            inputs[key] = value[index]
    # prompts were left padded together; drop the columns that are padding in every row here
    keep = inputs["attention_mask"].any(0)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in inputs:
            inputs[key] = inputs[key][:, keep]
    answer = target[index]
    inputs_full = dict(inputs)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in inputs:
            extra = {"input_ids": answer, "attention_mask": torch.ones_like(answer),
                     "mm_token_type_ids": torch.zeros_like(answer)}[key]
            inputs_full[key] = torch.cat([inputs[key], extra], dim=1)
    labels = torch.full_like(inputs_full["input_ids"], -100)
    labels[:, -answer.shape[1]:] = answer
    return inputs, inputs_full, labels


@torch.no_grad()
def _greedy_accuracy(model, prompt, pixels, target, index, chunk=64):
    """Share of examples `index` whose greedy first answer token is the right letter."""
    model.eval()
    correct = 0
    for i in range(0, len(index), chunk):
        part = index[i:i + chunk]
        inputs, _, _ = _batch(prompt, pixels, target, part)
        logits = model(**inputs, logits_to_keep=1).logits[:, -1]
        correct += (logits.argmax(-1) == target[part, 0]).sum().item()
    model.train()
    return correct / max(len(index), 1)


def teach_shapes(model_dir, steps: int = TEACH["steps"], batch_size: int = TEACH["batch_size"],
                 lr: float = TEACH["lr"], seed: int = TEACH["seed"], log=print, *,
                 warmup: int = TEACH["warmup"], holdout: int = TEACH["holdout"],
                 target: float | None = TEACH["target"],
                 eval_every: int = TEACH["eval_every"]) -> Path:
    """Supervised warm-up on shapes' train split: cross-entropy on "<letter><|im_end|>" only.

    A fixed, seeded recipe (TEACH); it never sees the test split. `holdout` train questions
    (a seeded draw) are kept out of training; every `eval_every` steps the greedy accuracy on
    them is checked, and training stops at the first check reaching `target` (None: never),
    so the model ends clearly better than chance but far from perfect. AdamW, linear warm-up
    then cosine decay over `steps`. Overwrites the weights in `model_dir` in place and returns
    the directory.
    """
    import math
    import random

    import data
    import vlm
    model, processor = vlm.load(str(model_dir))
    train = data.load_dataset("shapes", "train", seed=seed)
    rng = random.Random(seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    held, fit = order[:holdout], order[holdout:]
    prompt, pixels, answers = _encode_split(processor, train)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / max(warmup, 1), 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0)))))
    model.train()
    acc = None
    for step in range(steps):
        index = rng.sample(fit, batch_size)
        _, inputs, labels = _batch(prompt, pixels, answers, index)
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        done = step == steps - 1
        if held and ((step + 1) % eval_every == 0 or done):
            acc = _greedy_accuracy(model, prompt, pixels, answers, held)
            log(f"teach shapes: step {step + 1}/{steps} loss {loss.item():.3f} "
                f"hold-out accuracy {acc:.2f}")
            if target is not None and acc >= target:
                break
    model.eval()
    model.save_pretrained(model_dir)
    return Path(model_dir)
