"""Tiny vision-language models built offline, so ttrv runs and tests without the hub.

`python ttrv.py` (no arguments) and the test suite need a real Hugging Face VLM, but an
offline machine cannot download one. This file builds a few-layer Qwen2.5-VL (or Qwen2-VL,
InternVL) with random weights, a small byte-level BPE tokenizer trained here with the
`tokenizers` library, the real Qwen2-VL image processor and a Qwen-style chat template, and
writes it with `save_pretrained`. ttrv then loads it back through exactly the same
`AutoProcessor` / `AutoModelForImageTextToText.from_pretrained` path as a hub checkpoint.

    build_tiny_model(dir)                 # random weights
    teach_shapes(dir)                     # brief supervised warm-up on shapes' train split
    tiny_model_path("tiny")               # both, cached in the user cache directory

Each build runs in a child process with pinned numerics (tiny_build.pinned), so it writes the
same bytes on every x86 CPU.

Two taught models (tiny_teach.RECIPES): "tiny", the default, answers with a sentence instead of
a letter on purpose, although the letter is known: a failure of format for TTRV to repair.
"tiny-letters" always answers with a letter. tiny_teach.py says how each is taught.

What it leaves out: the tiny models know nothing of language; they only learn the shapes task.
They are stand-ins that exercise every code path and show one mechanism by which TTRV can gain,
not models whose numbers say why real VLMs gain.
"""

from pathlib import Path

import torch

from harness.tiny_build import (PINNED, build_cached, cached, default_cache_dir,  # noqa: F401
                                discard, pinned, unreadable)   # tiny.build_cached etc. still work
from harness.tiny_teach import NON_ANSWERS, RECIPES, teach_shapes

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

# Tiny InternVL (arch="internvl"): the structure of InternVL3 (InternViT tower, pixel-shuffle
# projector, Qwen2 text model with 1D rope) with 56x56 tiles of 14x14 patches -> 16 patches, 4
# image tokens per tile after the 0.5 pixel shuffle (the real model: 448x448 tiles, 256 tokens).
INTERNVL_TILE = 56
INTERNVL_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, image_size=[INTERNVL_TILE, INTERNVL_TILE],
                       patch_size=[14, 14], use_mean_pooling=True)
INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                   "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
# InternVL-hf's template: no system turn; an image item becomes "<IMG_CONTEXT>\n", which the
# processor expands to <img>, 4 (real: 256) <IMG_CONTEXT> per tile, </img>.
INTERNVL_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<IMG_CONTEXT>\n"
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


def _build_tokenizer(special_tokens=SPECIAL_TOKENS, **extra_special_tokens):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", padding_side="left",
                                   model_max_length=4096,
                                   **({"extra_special_tokens": extra_special_tokens}
                                      if extra_special_tokens else {}))


@pinned
def build_tiny_model(out_dir, arch: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """Write a random-weight tiny VLM to `out_dir`; `arch`: "qwen2_5_vl", "qwen2_vl" or "internvl".

    The directory then holds config.json, model.safetensors, tokenizer files, the processor
    config and chat_template.jinja, like any hub checkpoint. Returns the path.
    """
    if arch not in ("qwen2_5_vl", "qwen2_vl", "internvl"):
        raise ValueError(f"Unknown tiny architecture {arch!r}; use 'qwen2_5_vl', 'qwen2_vl' or "
                         "'internvl'.")
    model, processor = _build_internvl(seed) if arch == "internvl" else _build_qwen(arch, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def _build_qwen(arch, seed):
    import transformers as tf

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
    return model, processor


def _build_internvl(seed):
    """A tiny InternVLForConditionalGeneration with the -hf processor classes (no remote code)."""
    import transformers as tf

    special = SPECIAL_TOKENS + list(INTERNVL_TOKENS.values())
    tokenizer = _build_tokenizer(special, **INTERNVL_TOKENS)
    tokenizer.chat_template = INTERNVL_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special}
    tokens_per_tile = (INTERNVL_TILE // 14) ** 2 // 4                  # pixel shuffle 0.5: 4
    image_processor = tf.GotOcr2ImageProcessor(
        size={"height": INTERNVL_TILE, "width": INTERNVL_TILE}, crop_to_patches=True,
        min_patches=1, max_patches=12, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225])
    processor = tf.InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                     video_processor=tf.InternVLVideoProcessor(),
                                     image_seq_length=tokens_per_tile,
                                     chat_template=INTERNVL_CHAT_TEMPLATE)
    text = dict(TEXT, model_type="qwen2", vocab_size=len(tokenizer),
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    config = tf.InternVLConfig(vision_config=INTERNVL_VISION, text_config=text,
                               image_token_id=ids["<IMG_CONTEXT>"],
                               image_seq_length=tokens_per_tile, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = tf.InternVLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model, processor


# CPU-sized models next to real checkpoint files (tests/test_real_files.py, bench.py): every token
# id, the vocabulary, rope / mrope and patch settings stay as the files say; only depth and
# widths shrink. Head dim stays 128 (Qwen2.5-VL's mrope sections sum to 64 = 128 / 2).
SHRINK_TEXT = dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256,
                   num_attention_heads=1, num_key_value_heads=1)
SHRINK_VISION = {"qwen2_5_vl": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                    fullatt_block_indexes=[1]),
                 "internvl": dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                  num_attention_heads=2)}


@pinned
def build_from_files(src_dir, out_dir, seed: int = 0) -> Path:
    """A random-weight, CPU-sized model next to a real checkpoint's files (no weights there).

    Reads src_dir's config.json, shrinks the layers and widths (SHRINK_*; the vision tower's
    output width follows the text model's; a causal LM's config is its text config), builds it
    with random weights and saves it with the
    real processor (tokenizer, chat template, image processor) and generation config, so it
    loads exactly as the real checkpoint would. The saved copy holds a tokenizer.json, which
    loads much faster than the source's vocab.json/merges.txt.
    """
    from transformers import AutoConfig, AutoProcessor, GenerationConfig

    import vlm
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    config = AutoConfig.from_pretrained(src_dir).to_dict()
    kind = config["model_type"]
    vision = "vision_config" in config             # a causal LM (Qwen2.5-Math): text only
    if vision and kind not in SHRINK_VISION:
        raise ValueError(f"No shrink recipe for {kind!r}; add one to tiny.SHRINK_VISION.")
    text = config["text_config"] if vision else config
    text.update(SHRINK_TEXT, layer_types=text.get("layer_types", ["full_attention"])[:2],
                max_window_layers=SHRINK_TEXT["num_hidden_layers"])
    if vision:
        config["vision_config"].update(SHRINK_VISION[kind])
    if kind == "qwen2_5_vl":
        config["vision_config"]["out_hidden_size"] = SHRINK_TEXT["hidden_size"]
    config = AutoConfig.for_model(**config)
    torch.manual_seed(seed)
    model = vlm.auto_class(config).from_config(config)
    if (src_dir / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(src_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    AutoProcessor.from_pretrained(src_dir).save_pretrained(out_dir)
    return out_dir


@pinned
def build_taught(out_dir, name: str = "tiny") -> Path:
    """The tiny VLM `name` (RECIPES) built and taught in `out_dir`, in one pinned child."""
    build_tiny_model(out_dir, seed=RECIPES[name]["seed"])
    return teach_shapes(out_dir, **RECIPES[name])


def tiny_model_path(name: str = "tiny", cache_dir=None, log=print) -> Path:
    """The taught tiny Qwen2.5-VL `name` ("tiny" or "tiny-letters", see RECIPES), built on
    first use and cached (what `--model tiny` loads).

    The cache key hashes the recipe (sizes, tokenizer corpus, the name's teaching recipe and
    NON_ANSWERS), the shapes data version, the pinned numerics and the torch and transformers
    versions, so changing any rebuilds. tiny_build.cached builds it in a temporary sibling
    directory, renamed when complete, and rebuilds an entry that cannot be read.
    """
    import hashlib
    import json

    import transformers

    from harness import shapes
    if name not in RECIPES:
        raise ValueError(f"Unknown tiny model {name!r}; use one of {sorted(RECIPES)}.")
    teach = RECIPES[name]
    recipe = json.dumps([TEXT, MROPE_SECTION, VISION_25, VOCAB_SIZE, MAX_IMAGE_PIXELS, _CORPUS,
                         CHAT_TEMPLATE, teach, shapes.SHAPES, shapes.HOME_COLOUR_RATE,
                         NON_ANSWERS if teach["non_answer_share"] else None, PINNED,
                         torch.__version__, transformers.__version__],
                        sort_keys=True)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"{name}-qwen2_5_vl-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"
    return cached(path, lambda tmp: build_taught(tmp, name, log=log), "tiny model", log)
