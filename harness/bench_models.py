"""bench.py's models and inputs: the full-size architectures with random weights, and their prompts.

`build(args, device)` gives bench.py, for --arch, the policy and its inputs:
  tiny           the tiny Qwen2.5-VL (harness/tiny.py), shapes test images (112x112 -> 16 image
                 tokens) through the tiny processor;
  qwen2.5-vl-3b  Qwen2.5-VL-3B's architecture from its config values (QWEN3B_*); the step's prompts
                 from the real processor files (../shared/fixtures) when present, else tensors
                 built directly (`synthetic_prompts`: a RESISC45-sized prompt of PROMPT_TOKENS
                 tokens holding 81 image tokens; the eval batches always are); pixel_values from
                 the Qwen2-VL image processor on a random 256x256 image (-> 252x252, grid
                 [1, 18, 18], 324 patch rows of 1176);
  internvl3-2b   InternVL3-2B's architecture from the real config, prompts from the real processor.
`count_3b` and `count_internvl` build the architectures on the meta device and count parameters.
Random weights only: for speed and memory, only shapes and lengths matter.
"""
import random
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

import data
import vlm
from harness import presets, resisc45

# Qwen/Qwen2.5-VL-3B-Instruct config.json, written out (random weights, nothing downloaded).
QWEN3B_TEXT = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                   num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                   hidden_act="silu", max_position_embeddings=128000, rms_norm_eps=1e-6,
                   bos_token_id=151643, eos_token_id=151645,
                   rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                    "mrope_section": [16, 24, 24]})
QWEN3B_VISION = dict(depth=32, hidden_size=1280, hidden_act="silu", intermediate_size=3420,
                     num_heads=16, in_channels=3, out_hidden_size=2048, patch_size=14,
                     spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                     fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2)
QWEN3B_IDS = dict(end=[151643, 151645], pad=151643, im_start=151644, vision_start=151652,
                  vision_end=151653, image=151655, first_special=151643)
PARAMS_PUBLISHED = 3_754_622_976   # the checkpoint's count as published (MTEB model metadata)
PARAMS_NOTES = 3_756_466_176       # paper-notes section 7
RESISC_IMAGE = 256                 # RESISC45 images are 256x256 -> 81 image tokens
# An estimate of a RESISC45 prompt's length, used only without ../shared/fixtures
# (tests/test_bench.py checks the real prompts' lengths).
PROMPT_TOKENS = 190
ROOT = Path(__file__).resolve().parent.parent                  # the repository root
FIXTURES = ROOT.parent / "shared" / "fixtures"   # ../shared/fixtures: real files, no weights
# InternVL3-8B: InternViT-300M-448px (as in the 2B) + a Qwen2.5-7B text model, values as written
# in OpenGVLab/InternVL3-8B(-hf)'s config.json; ../shared/fixtures holds no copy to check them
# against, so the count below is "as configured", not "as published".
INTERNVL3_8B_TEXT = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, vocab_size=151674)


def qwen25_vl_3b(device):
    """Qwen2_5_VLForConditionalGeneration, 3B architecture, random fp32 init, built on `device`."""
    import transformers as tf
    config = tf.Qwen2_5_VLConfig(text_config=QWEN3B_TEXT, vision_config=QWEN3B_VISION,
                                 image_token_id=QWEN3B_IDS["image"], video_token_id=151656,
                                 vision_start_token_id=QWEN3B_IDS["vision_start"],
                                 vision_end_token_id=QWEN3B_IDS["vision_end"],
                                 tie_word_embeddings=True)
    with torch.device(device):
        return tf.Qwen2_5_VLForConditionalGeneration(config)


def count_3b():
    """Build the 3B model on the meta device; print its parameter count and static memory."""
    model = qwen25_vl_3b("meta")
    n = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.visual.parameters())
    print(f"Qwen2.5-VL-3B architecture (meta device): {n:,} parameters "
          f"(vision tower {vision:,}, language model {n - vision:,}; lm_head tied)")
    same = "matches" if n == PARAMS_PUBLISHED else "DIFFERS from"
    print(f"  {same} the published {PARAMS_PUBLISHED:,}; paper-notes' {PARAMS_NOTES:,} is "
          f"{PARAMS_NOTES - n:+,} off")
    gb = n / 1e9
    print(f"  static memory, full fine-tuning: fp32 weights {4 * gb:.1f} GB + fp32 grads "
          f"{4 * gb:.1f} + AdamW states {8 * gb:.1f} + bf16 reference {2 * gb:.1f} = "
          f"{18 * gb:.1f} GB before activations")
    return n


def internvl_config(arch):
    """InternVL3-2B's config from the real files (../shared/fixtures); 8B: the same with the
    published 7B text sizes (INTERNVL3_8B_TEXT)."""
    from transformers import AutoConfig
    src = FIXTURES / "internvl3-2b-hf"
    if not src.is_dir():
        raise SystemExit(f"error: --arch {arch} reads ../shared/fixtures/internvl3-2b-hf, which "
                         "is absent; run from a checkout that has it.")
    config = AutoConfig.from_pretrained(src)
    if arch == "internvl3-8b":
        for key, value in INTERNVL3_8B_TEXT.items():
            setattr(config.text_config, key, value)
        config.text_config.layer_types = ["full_attention"] * INTERNVL3_8B_TEXT["num_hidden_layers"]
    return config


def count_internvl(arch):
    """Build the InternVL architecture on the meta device; print its parameter count."""
    from transformers import InternVLForConditionalGeneration
    with torch.device("meta"):
        model = InternVLForConditionalGeneration(internvl_config(arch))
    n = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    print(f"{arch} architecture (meta device): {n:,} parameters (vision tower {vision:,}, "
          f"projector {projector:,}, language model {n - vision - projector:,})")
    return n


def real_prompts(name, k, size=RESISC_IMAGE):
    """`k` RESISC45-style prompts from the real processor files (../shared/fixtures/`name`):
    (processor, PromptInputs). Questions: data.make_choice_question over RESISC45's classes."""
    from PIL import Image
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(FIXTURES / name)
    processor.tokenizer.padding_side = "left"
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    questions = [data.make_choice_question(c, resisc45.RESISC45_CLASSES, rng)[0]
                 for c in rng.sample(resisc45.RESISC45_CLASSES, k)]
    noise = torch.randint(0, 256, (size, size, 3), generator=gen).byte().numpy()
    return processor, vlm.prompt_inputs(processor, [Image.fromarray(noise)] * k, questions)


def synthetic_prompts(batch, pixels, gen):
    """`batch` RESISC45-sized Qwen2.5-VL prompts: random text ids around 81 image-pad tokens."""
    image_tokens = int(pixels["image_grid_thw"].prod()) // 4          # merge 2x2 patches -> 81
    head = 20                                                         # system turn + user header
    ids = torch.randint(0, QWEN3B_IDS["first_special"], (batch, PROMPT_TOKENS), generator=gen)
    ids[:, 0] = QWEN3B_IDS["im_start"]
    ids[:, head] = QWEN3B_IDS["vision_start"]
    ids[:, head + 1:head + 1 + image_tokens] = QWEN3B_IDS["image"]
    ids[:, head + 1 + image_tokens] = QWEN3B_IDS["vision_end"]
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                mm_token_type_ids=(ids == QWEN3B_IDS["image"]).long(),
                pixel_values=pixels["pixel_values"].repeat(batch, 1),
                image_grid_thw=pixels["image_grid_thw"].repeat(batch, 1))


def build(args, device):
    """The policy (random weights, fp32, on `device`) and its inputs for --arch: policy, prompts
    (the step's B prompts), eval_inputs (batches of --eval-batch), preprocess(lo, hi) (the CPU
    preprocessing of eval images lo..hi, timed by bench.py), end_ids, pad_id, special (token
    ids to suppress) and what (the table's title)."""
    if args.arch == "tiny":
        return _tiny(args)
    if args.arch == "internvl3-2b":
        return _internvl3_2b(args, device)
    return _qwen25_vl_3b(args, device)


def _tiny(args):
    from harness import tiny
    model_dir = args.tiny_dir or tiny.build_tiny_model(tempfile.mkdtemp(prefix="bench-tiny-"))
    policy, processor = vlm.load(str(model_dir), args.device, torch.float32)
    examples = presets.load_dataset("shapes", "test")[:max(args.prompts, args.eval_images)]
    images, questions = [e.image() for e in examples], [e.question for e in examples]
    prompts = vlm.prompt_inputs(processor, images[:args.prompts], questions[:args.prompts])
    eval_images, eval_questions = images[:args.eval_images], questions[:args.eval_images]
    preprocess = lambda lo, hi: vlm.prompt_inputs(processor, eval_images[lo:hi],
                                                   eval_questions[lo:hi])
    eval_inputs = [preprocess(i, i + args.eval_batch)
                   for i in range(0, args.eval_images, args.eval_batch)]
    special = [processor.tokenizer.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS]
    return SimpleNamespace(policy=policy, prompts=prompts, eval_inputs=eval_inputs,
                           preprocess=preprocess, end_ids=vlm.end_token_ids(policy, processor),
                           pad_id=vlm.pad_token_id(processor), special=special,
                           what="tiny Qwen2.5-VL (random weights)")


def _internvl3_2b(args, device):
    from PIL import Image
    from transformers import InternVLForConditionalGeneration
    with torch.device(device):
        policy = InternVLForConditionalGeneration(internvl_config(args.arch))
    processor, prompts = real_prompts("internvl3-2b-hf", args.prompts)
    _, eval_all = real_prompts("internvl3-2b-hf", args.eval_images)
    batches = [(i, min(i + args.eval_batch, args.eval_images))
               for i in range(0, args.eval_images, args.eval_batch)]
    eval_inputs = [{k: v[lo:hi] for k, v in eval_all.items()} for lo, hi in batches]
    image = Image.new("RGB", (RESISC_IMAGE, RESISC_IMAGE))
    question = processor.tokenizer.decode(prompts["input_ids"][0][-60:])   # any real text
    preprocess = lambda lo, hi: vlm.prompt_inputs(processor, [image] * (hi - lo),
                                                   [question] * (hi - lo))
    return SimpleNamespace(policy=policy, prompts=prompts, eval_inputs=eval_inputs,
                           preprocess=preprocess, end_ids=[151645],
                           pad_id=processor.tokenizer.pad_token_id,
                           special=list(range(151643, 151674)),
                           what="InternVL3-2B architecture (random weights; real processor files)")


def _qwen25_vl_3b(args, device):
    from PIL import Image
    from transformers import Qwen2VLImageProcessor
    policy = qwen25_vl_3b(device)
    image_processor = Qwen2VLImageProcessor()  # patch 14, merge 2, min_pixels 56*56
    gen = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (RESISC_IMAGE, RESISC_IMAGE, 3), generator=gen)
    eval_images = [Image.fromarray(noise.byte().numpy())] * args.eval_images
    preprocess = lambda lo, hi: image_processor(images=eval_images[lo:hi], return_tensors="pt")
    prompts = (real_prompts("qwen2.5-vl-3b-instruct", args.prompts)[1]
               if (FIXTURES / "qwen2.5-vl-3b-instruct").is_dir()
               else synthetic_prompts(args.prompts, preprocess(0, 1), gen))
    eval_inputs = [synthetic_prompts(min(args.eval_batch, args.eval_images - i),
                                     preprocess(0, 1), gen)
                   for i in range(0, args.eval_images, args.eval_batch)]
    return SimpleNamespace(policy=policy, prompts=prompts, eval_inputs=eval_inputs,
                           preprocess=preprocess, end_ids=QWEN3B_IDS["end"],
                           pad_id=QWEN3B_IDS["pad"],
                           special=list(range(QWEN3B_IDS["first_special"],
                                              QWEN3B_TEXT["vocab_size"])),
                           what="Qwen2.5-VL-3B architecture (random weights)")
