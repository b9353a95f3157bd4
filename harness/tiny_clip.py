"""Tiny CLIP models built offline, so grpo_tta.py runs and tests without the hub.

`python grpo_tta.py` (no arguments) needs a CLIP whose zero-shot prediction means something, but
no CLIP weights can be downloaded here (and no PyPI package ships any). This file builds a
two-layer `CLIPModel` (32x32 images, 8x8 patches, a 64-wide text and vision tower), a small
`CLIPTokenizer` (CLIP's own class: lower-casing, `</w>` word ends, <|startoftext|> ...
<|endoftext|>) whose merges spell the prompts' words, and CLIP's image processor, teaches it
contrastively on shapes drawn in one style, and saves it with `save_pretrained`. grpo_tta.py loads
it back through exactly the `CLIPModel` / `AutoProcessor` path of a hub checkpoint.

    tiny_clip_path()                      # built on first use (under a minute), cached
    toy_examples("shifted", 240)          # the demonstration's test images, labelled
    build_from_files(fixtures, out)       # a CPU-sized CLIP next to the real ViT-B/16 files

The toy and its shift (TOY): the model is taught on six shape kinds (CLASSES) drawn as
`shapes.draw_shape` draws them (a dark, saturated shape filling 14-40% of the side of a light
background, solid, gradient or noise), each in its class's home colour 80% of the time (a strong,
imperfect cue: the tiny tower learns colour in seconds, shapes slowly). The "shifted" test images
show the same classes, same colour rule, small (5-12% of the side) and anywhere in the field with
two thin random lines as clutter; they are never taught. A single centre view sees the shape at
a size the model never learned, while some random crops zoom in on it: the mechanism by which
multi-view test-time methods (TPT, ZERO, GRPO-TTA) gain on ImageNet-A. What it leaves out: the
tiny CLIP knows a dozen words; it is a stand-in that exercises every code path, not a model whose
numbers say why real CLIPs gain. docs/grpo-tta.md has the measured figures.
"""

import hashlib
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import torch

import data
import grpo
from harness import shapes
from harness.tiny_build import PINNED, build_cached, cached, default_cache_dir, pinned

# ---------------------------------------------------------------------------------------------
# Tiny CLIP hyperparameters (all in one place).
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=32)
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8)
PROJECTION = 64
PROMPT = "a photo of a {}."             # CLIP's prompt; the same in grpo_tta.py
# Six of shapes.SHAPE_KINDS: at 32x32 a pentagon or hexagon is hardly told from a circle.
CLASSES = ["circle", "triangle", "square", "star", "cross", "crescent"]
SPECIAL = ["<|startoftext|>", "<|endoftext|>"]
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
# What the tokenizer's merges are learned from: the prompts of the toy's classes and a few
# everyday words, so that each of them is one token; anything else still encodes byte by byte.
_CORPUS = [PROMPT.format(c) for c in CLASSES] * 8 + ["photo of a the an image shape sketch"] * 4

# Teaching: a fixed, seeded recipe (no early stop). Measured figures: docs/grpo-tta.md.
TEACH = dict(images=2000,      # train-style images drawn once (stream "tiny-clip/train")
             steps=300,        # AdamW steps
             batch_size=32,
             lr=3e-3,          # peak of grpo.cosine_lr, weight decay 0.01
             warmup_ratio=0.1,
             crop_scale=(0.35, 1.0),   # random resized crops while teaching (CLIP trains on crops)
             seed=0)
TOY = dict(draw_size=112,            # images are drawn at 112x112 and shown to CLIP at 32x32
           home_colour_rate=0.8,     # each class wears its home colour this often, else any
           shifted_radius=(0.05, 0.12),   # shape radius / side (taught: 0.14-0.4, harness/shapes.py)
           clutter_lines=2)


def _tokenizer():
    """A CLIPTokenizer whose merges spell each word of _CORPUS left to right, so that each is
    one token (CLIP's `</w>` word ends); any other text still encodes byte by byte. Built, not
    trained: the `tokenizers` BPE trainer breaks ties between equally frequent pairs in hash
    order, which would change the ids (and so the taught weights) from one build to the next."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    pieces = SPECIAL + alphabet + [ch + "</w>" for ch in alphabet]
    vocab, merges = {t: i for i, t in enumerate(pieces)}, []
    words = sorted({w for line in _CORPUS for w in re.findall(r"[a-z]+|[^\sa-z]+", line.lower())})
    for word in words:
        left, *rest = list(word[:-1]) + [word[-1] + "</w>"]
        for right in rest:
            if left + right not in vocab:
                merges.append((left, right))
                vocab[left + right] = len(vocab)
            left += right
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TEXT["max_position_embeddings"])


@pinned
def build_tiny_clip(out_dir, seed: int = 0) -> Path:
    """Write a random-weight tiny CLIP (CLIPModel + CLIPProcessor) to `out_dir`; returns it."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = _tokenizer()
    side = VISION["image_size"]
    image_processor = CLIPImageProcessor(size={"shortest_edge": side},
                                         crop_size={"height": side, "width": side}, resample=3,
                                         image_mean=OPENAI_MEAN, image_std=OPENAI_STD)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    text = dict(TEXT, vocab_size=len(tokenizer), bos_token_id=ids["<|startoftext|>"],
                eos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"])
    config = CLIPConfig(text_config=text, vision_config=VISION, projection_dim=PROJECTION)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------
# The toy's images.

def _small_shape(kind, rng, size, radius, colour):
    """A `kind` shape of radius `radius` x side anywhere on a light background (solid or smooth
    noise) with two thin random lines as clutter; drawn at 2x and downsampled, as draw_shape."""
    from PIL import Image, ImageDraw
    bg = Image.new("RGB", (size, size), tuple(rng.randint(170, 255) for _ in "rgb"))
    if rng.random() < 0.5:
        noise = Image.frombytes("RGB", (8, 8), rng.randbytes(192)).resize((size, size),
                                                                          Image.BICUBIC)
        bg = Image.blend(noise, Image.new("RGB", (size, size), (235, 235, 235)), 0.6)
    s = 2 * size
    r = radius * s
    cx, cy, rot = rng.uniform(r, s - r), rng.uniform(r, s - r), rng.uniform(0, 2 * math.pi)
    mask = Image.new("L", (s, s), 0)
    pen = ImageDraw.Draw(mask)
    if kind in ("circle", "crescent"):
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        if kind == "crescent":
            ox, oy, q = cx + 0.5 * r * math.cos(rot), cy + 0.5 * r * math.sin(rot), 0.85 * r
            pen.ellipse((ox - q, oy - q, ox + q, oy + q), fill=0)
    else:
        pen.polygon([(cx + x, cy + y) for x, y in shapes._outline(kind, r, rot)], fill=255)
    img = Image.composite(Image.new("RGB", (size, size), colour), bg,
                          mask.resize((size, size), Image.BILINEAR))
    pen = ImageDraw.Draw(img)
    for _ in range(TOY["clutter_lines"]):
        pen.line([(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(2)],
                 fill=rng.choice(shapes.COLOURS), width=2)
    return img


def draw_toy(kind: str, rng: random.Random, style: str):
    """One toy image of `kind`: style "taught" (shapes.draw_shape as is) or "shifted" (the shape
    small, anywhere, with clutter; see the module docstring)."""
    home = shapes.COLOURS[CLASSES.index(kind)]
    colour = home if rng.random() < TOY["home_colour_rate"] else rng.choice(shapes.COLOURS)
    if style == "taught":
        return shapes.draw_shape(kind, rng, TOY["draw_size"], colour)
    if style != "shifted":
        raise ValueError(f"Unknown toy style {style!r}; use 'taught' or 'shifted'.")
    return _small_shape(kind, rng, TOY["draw_size"], rng.uniform(*TOY["shifted_radius"]), colour)


def toy_examples(style: str, n: int, seed: int = 0, split: str = "test") -> list:
    """`n` labelled toy images (classes balanced, shuffled) as data.Example, label = class name.
    Train and test come from different random streams."""
    rng = random.Random(f"tiny-clip/{split}/{style}/{seed}")
    kinds = [CLASSES[i % len(CLASSES)] for i in range(n)]
    rng.shuffle(kinds)
    return [data.Example(f"toy-{style}-{i:04d}", "", list(CLASSES), None, k, draw_toy(k, rng, style))
            for i, k in enumerate(kinds)]


# ---------------------------------------------------------------------------------------------
# Teaching.

@pinned
def teach(model_dir, steps: int = TEACH["steps"], images: int = TEACH["images"],
          batch_size: int = TEACH["batch_size"], lr: float = TEACH["lr"],
          seed: int = TEACH["seed"], log=print) -> Path:
    """Contrastive warm-up on train-style toy images: CLIP's image-to-text cross-entropy of
    logit_scale * cos(image, "a photo of a {c}.") over the six class prompts, both towers
    trained, lr warmed up and decayed with grpo.cosine_lr (the text-to-image half of CLIP's
    symmetric loss is left out: with six prompts and 32 images a batch holds each class several
    times). Random resized crops of scale
    TEACH["crop_scale"] and flips. It never sees a shifted image. Runs in a pinned child
    (tiny_build.PINNED), so the weights do not depend on the machine's CPU or core count.
    """
    from torchvision.ops import roi_align
    from transformers import AutoProcessor, CLIPModel

    model, processor = CLIPModel.from_pretrained(model_dir), AutoProcessor.from_pretrained(model_dir)
    train = toy_examples("taught", images, seed, split="train")
    pixels = torch.stack([torch.from_numpy(np.array(e.source)).permute(2, 0, 1)
                          for e in train]).float() / 255.0                       # [N, 3, S, S]
    labels = torch.tensor([CLASSES.index(e.label) for e in train])                # [N]
    text = processor.tokenizer([PROMPT.format(c) for c in CLASSES], padding=True,
                               return_tensors="pt")
    mean, std = torch.tensor(OPENAI_MEAN)[:, None, None], torch.tensor(OPENAI_STD)[:, None, None]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    for step in range(steps):
        grpo.set_lr(optimizer, grpo.cosine_lr(step, steps, lr, TEACH["warmup_ratio"]))
        idx = rng.sample(range(len(train)), batch_size)
        views = _random_crops(pixels[idx], VISION["image_size"], rng, roi_align)  # [B,3,s,s]
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                    pixel_values=(views - mean) / std)
        loss = torch.nn.functional.cross_entropy(out.logits_per_image, labels[idx])  # [B, C]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 200 == 0:
            log(f"teach tiny CLIP: step {step + 1}/{steps} loss {loss.item():.3f}")
    model.save_pretrained(model_dir)
    return Path(model_dir)


def _random_crops(images, side, rng, roi_align):
    """Random resized crops (area share TEACH["crop_scale"], aspect 3/4-4/3) of a batch
    [B, 3, S, S] at side x side, half of them flipped, in one roi_align call (its adaptive
    sampling averages each output pixel's bin: no aliasing)."""
    size, boxes = images.shape[-1], []
    for b in range(images.shape[0]):
        area, aspect = rng.uniform(*TEACH["crop_scale"]), math.exp(rng.uniform(math.log(3 / 4),
                                                                               math.log(4 / 3)))
        w, h = (min(size, size * math.sqrt(area * a)) for a in (aspect, 1 / aspect))
        x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
        boxes.append([b, x, y, x + w, y + h])
    crops = roi_align(images, torch.tensor(boxes), side, aligned=True)           # [B, 3, s, s]
    flip = torch.tensor([rng.random() < 0.5 for _ in boxes])[:, None, None, None]
    return torch.where(flip, crops.flip(-1), crops)


def recipe_key() -> str:
    """Hash of everything the cached model depends on: sizes, tokenizer corpus, teaching, toy,
    the pinned numerics, the torch and transformers versions."""
    import transformers
    recipe = json.dumps([TEXT, VISION, PROJECTION, PROMPT, CLASSES, _CORPUS, TEACH, TOY,
                         shapes.COLOURS, PINNED, torch.__version__, transformers.__version__],
                        sort_keys=True)
    return hashlib.sha256(recipe.encode()).hexdigest()[:10]


@pinned
def build_taught(out_dir) -> Path:
    """The tiny CLIP built and taught in `out_dir`, in one pinned child."""
    build_tiny_clip(out_dir)
    return teach(out_dir)


def tiny_clip_path(cache_dir=None, log=print) -> Path:
    """The taught tiny CLIP, built on first use and cached under the cache directory (what
    `--model tiny-clip` loads); tiny_build.cached builds it in a temporary sibling, renamed
    when complete, and rebuilds an entry that cannot be read."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    return cached(cache / f"tiny-clip-{recipe_key()}", lambda tmp: build_taught(tmp, log=log),
                  "tiny CLIP", log)


# ---------------------------------------------------------------------------------------------
# A CPU-sized CLIP next to the real ViT-B/16 files (tests, bench): every token id, the vocabulary
# (49,408), the 77 positions, patch 16 and image 224 stay as the files say; depth and widths
# shrink.
SHRINK_TEXT = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2)
SHRINK_VISION = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                     num_attention_heads=2)


@pinned
def build_from_files(src_dir, out_dir, seed: int = 0) -> Path:
    """A random-weight, CPU-sized CLIPModel next to a real CLIP checkpoint's files (no weights
    there), saved with the real processor (tokenizer, 224 px image processor)."""
    from transformers import AutoConfig, AutoProcessor, CLIPModel
    config = AutoConfig.from_pretrained(src_dir)
    if config.model_type != "clip":
        raise ValueError(f"{src_dir} holds a {config.model_type!r} config, not a CLIP one.")
    config.text_config.update(SHRINK_TEXT)
    config.vision_config.update(SHRINK_VISION)
    config.projection_dim = 32
    torch.manual_seed(seed)
    model = CLIPModel(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    AutoProcessor.from_pretrained(src_dir).save_pretrained(out_dir)
    return out_dir


def shrunk_path(src_dir, cache_dir=None) -> Path:
    """build_from_files(src_dir) cached under the cache directory, keyed by the files' bytes."""
    import transformers
    src = Path(src_dir)
    key = hashlib.sha256(json.dumps([SHRINK_TEXT, SHRINK_VISION, PINNED, torch.__version__,
                                     transformers.__version__]).encode())
    for f in sorted(src.iterdir()):
        key.update(f.name.encode() + f.read_bytes())
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"real-{src.name}-{key.hexdigest()[:10]}"
    return build_cached(path, lambda tmp: build_from_files(src, tmp))
