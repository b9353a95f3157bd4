"""The real checkpoints' files (../shared/fixtures: tokenizers, chat templates, image processors,
configs; no weights) under CPU-sized random weights (tiny.build_from_files).

What a user's `--model Qwen/Qwen2.5-VL-3B` or `--model InternVL3-2B` meets: the rendered prompt,
the image tokens, the end tokens, a full ttrv run on both paths, eval.py. And the issue's "done
when": images of 256x256, 512x256, 300x500 and 640x480 on the InternVL files (1, 3, 7 and 13
tiles), one batch through both paths, the same first-update gradient norm.
Skipped in a clone without ../shared/fixtures (a failure under CI=true: conftest.shared_path).
"""

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import eval as evaluation
import grpo
import rollout
import shared_prefix
from harness import tiny
import ttrv
import vlm
from harness import cli, eval_cli, families, models

from conftest import shared_path

QWEN, INTERNVL = "qwen2.5-vl-3b-instruct", "internvl3-2b-hf"
DONE_WHEN_SIZES = [(256, 256), (512, 256), (300, 500), (640, 480)]   # (w, h) -> 1, 3, 7, 13 tiles


def _built(name):
    """The shrunk model next to fixture `name`, built once and cached under $TTRV_CACHE, keyed by
    the fixture files, the shrink recipe, the pinned numerics and the transformers version."""
    import transformers
    src = shared_path("fixtures", name)       # skipped without it (a failure under CI=true)
    key = hashlib.sha256(json.dumps([tiny.SHRINK_TEXT, tiny.SHRINK_VISION, tiny.PINNED,
                                     transformers.__version__]).encode())
    for f in sorted(src.iterdir()):
        key.update(f.name.encode() + f.read_bytes())
    path = tiny.default_cache_dir() / f"real-{name}-{key.hexdigest()[:10]}"
    return tiny.build_cached(path, lambda tmp: tiny.build_from_files(src, tmp))


@pytest.fixture(scope="session")
def qwen_files():
    return _built(QWEN)


@pytest.fixture(scope="session")
def internvl_files():
    return _built(INTERNVL)


def _images(sizes):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def test_qwen_prompt_has_the_default_system_prompt_81_image_tokens_and_both_end_tokens(qwen_files):
    model, processor = vlm.load(str(qwen_files))
    inputs = vlm.prompt_inputs(processor, _images([(256, 256)]), ["What is shown?"])
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                           "<|im_start|>user\n<|vision_start|><|image_pad|>")
    assert text.endswith("What is shown?<|im_end|>\n<|im_start|>assistant\n")
    assert (inputs["input_ids"] == 151655).sum() == 81 and inputs.pixel_rows == [324]
    assert vlm.end_token_ids(model, processor) == [151643, 151645]   # <|endoftext|>, <|im_end|>
    assert vlm.pad_token_id(processor) == 151643
    assert families.freeze_vision(model) is False                         # Qwen: the tower trains


def test_internvl_prompt_has_no_system_turn_and_256_tokens_per_tile(internvl_files):
    model, processor = models.load(str(internvl_files))           # with the family's tiling
    inputs = vlm.prompt_inputs(processor, _images(DONE_WHEN_SIZES), ["Q?"] * 4)
    assert inputs.pixel_rows == [1, 3, 7, 13]                        # 12 tiles max + thumbnail
    assert inputs["pixel_values"].shape == (24, 3, 448, 448)
    image_tokens = (inputs["input_ids"] == 151667).sum(1)            # <IMG_CONTEXT>
    assert image_tokens.tolist() == [256 * t for t in (1, 3, 7, 13)]
    text = processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=False)
    text = text.replace("<|endoftext|>", "")                         # left padding
    assert text.startswith("<|im_start|>user\n<img><IMG_CONTEXT>") and "system" not in text
    assert text.endswith("</img>\nQ?<|im_end|>\n<|im_start|>assistant\n")
    assert vlm.end_token_ids(model, processor) == [151645]           # <|im_end|>
    assert families.freeze_vision(model) is True                          # the official protocol


@pytest.mark.parametrize("name", [QWEN, INTERNVL])
def test_cli_runs_on_both_paths_and_eval_py_reads_the_model(name, request, tmp_path, capsys):
    model_dir = request.getfixturevalue({QWEN: "qwen_files", INTERNVL: "internvl_files"}[name])
    # random weights never answer in format (every vote reward equal, A = 0): the random reward
    # gives the loop a signal; weight decay 0, so a gradient is all that can move the weights
    common = ["--model", str(model_dir), "--num-samples", "2", "--rollouts", "4",
              "--prompts-per-step", "2", "--epochs", "1", "--eval-limit", "2",
              "--max-new-tokens", "2", "--quiet", "--device", "cpu", "--allow-cpu",
              "--no-save-model", "--reward", "random", "--weight-decay", "0"]
    for path in ("--shared-prefix", "--no-shared-prefix"):
        out = tmp_path / path
        assert cli.main(common + [path, "--output-dir", str(out)]) == 0, capsys.readouterr().err
        steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps[-1]["updates"] == 2
        assert all(np.isfinite(list(m.values())).all() for m in steps)
        assert all(m["adv_abs"] > 0 and m["grad_norm"] > 0 for m in steps)    # it learns
    assert eval_cli.main(["--model", str(model_dir), "--limit", "2", "--max-new-tokens", "2",
                            "--batch-size", "2", "--device", "cpu"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_done_when_mixed_tiles_first_update_gradient_norm_agrees(internvl_files):
    """One batch of the four image sizes: the plain path's old-policy log-probs over the repeated
    batch equal the shared sampler's, and the first update (ttrv.backward, the loop's own, on the
    13-tile prompt) has the same gradient norm on both paths (fp32)."""
    policy, processor = models.load(str(internvl_files))
    ref_model = vlm.load_model(str(internvl_files), "cpu", torch.float32).eval()
    families.freeze_vision(policy)
    policy.activation_checkpointing_enable({"use_reentrant": False})
    policy.train()
    inputs = vlm.prompt_inputs(processor, _images(DONE_WHEN_SIZES[::-1]),
                               ["What is shown? A. x\nB. y"] * 4)     # 13, 7, 3, 1 tiles
    n, end = 2, vlm.end_token_ids(policy, processor)
    torch.manual_seed(0)
    roll = shared_prefix.sample(policy, inputs, n, temperature=1.0, top_p=1.0,
                                max_new_tokens=3, eos_token_ids=end,
                                pad_token_id=vlm.pad_token_id(processor),
                                suppress_token_ids=vlm.placeholder_token_ids(policy))
    with torch.no_grad():
        plain_old = rollout.logprobs(policy, inputs, roll.completion_ids, roll.mask)
    torch.testing.assert_close(plain_old, roll.logprobs, atol=1e-5, rtol=0)
    one = vlm.split_inputs(inputs)[0]              # the first update: the 13-tile prompt
    assert one["pixel_values"].shape[0] == 13
    params = [p for p in policy.parameters() if p.requires_grad]
    norms = []
    ids, mask = roll.completion_ids[:n], roll.mask[:n].float()
    for sampler in (shared_prefix, rollout):
        cfg = SimpleNamespace(temperature=1.0, micro_batch=None, beta=0.001, clip_eps=0.2,
                              dual_clip=3.0, loss_agg="token_mean")
        with torch.no_grad():
            ref = sampler.logprobs(ref_model, one, ids, mask)
        group = rollout.Experience(one, ids, mask, roll.logprobs[:n], ref, torch.tensor([1.0, -1.0]))
        s = ttrv.Setup(policy, ref_model, processor, torch.autocast("cpu", enabled=False), sampler)
        ttrv.backward(s, group, cfg, float(mask.sum()), 1.0)
        norms.append(grpo.clip_grad_norm(params, float("inf")))
        policy.zero_grad(set_to_none=True)
    assert norms[0] > 0 and abs(norms[0] - norms[1]) <= 1e-5 * norms[1], norms


def test_lora_rank_8_runs_on_the_real_qwen_files_and_eval_py_reads_the_merged_model(
        qwen_files, tmp_path, capsys):
    out = tmp_path / "lora"
    assert cli.main(["--model", str(qwen_files), "--num-samples", "2", "--rollouts", "2",
                     "--prompts-per-step", "2", "--epochs", "1", "--eval-limit", "2",
                     "--max-new-tokens", "2", "--quiet", "--device", "cpu", "--allow-cpu",
                     "--lora-rank", "8", "--merge-lora", "--output-dir", str(out)]) == 0, \
        capsys.readouterr().err
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[0]["updates"] == 2
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 8
    assert eval_cli.main(["--model", str(out), "--limit", "2", "--max-new-tokens", "2",
                          "--batch-size", "2", "--device", "cpu"]) == 0
