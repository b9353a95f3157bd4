"""The model seam (vlm.py): loading through the Auto classes, prompt tensors, repeat and split."""

import json
import shutil

import pytest
import torch
from PIL import Image

import vlm
from harness import eval_cli, families, models


def _prompts(processor):
    images = [Image.new("RGB", (112, 112), (200, 0, 0)), Image.new("RGB", (56, 84), (0, 0, 200))]
    return vlm.prompt_inputs(processor, images, ["What is this? A. x\nB. y", "Short?"])


def test_tiny_model_loads_through_the_hub_path(tiny_dir):
    model, processor = vlm.load(str(tiny_dir))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert processor.tokenizer.padding_side == "left"
    assert vlm.end_token_ids(model, processor) == [processor.tokenizer.eos_token_id]


def test_prompt_inputs_are_left_padded_chat_prompts(tiny_dir):
    processor = vlm.load_processor(str(tiny_dir))
    inputs = _prompts(processor)
    mask = inputs["attention_mask"]
    assert mask[:, -1].all() and not mask[1, 0]               # padding on the left only
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert text.endswith("<|im_start|>assistant\n") and "<|image_pad|>" in text
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8], [1, 6, 4]]


def test_repeat_inputs_keeps_each_image_with_its_prompt(tiny_dir):
    processor = vlm.load_processor(str(tiny_dir))
    inputs = _prompts(processor)
    rep = vlm.repeat_inputs(inputs, 3)
    assert rep["input_ids"].shape[0] == 6
    assert torch.equal(rep["input_ids"][2], inputs["input_ids"][0])
    assert torch.equal(rep["input_ids"][3], inputs["input_ids"][1])
    rows = inputs["image_grid_thw"].prod(-1).tolist()          # 64 and 24 patches
    first, second = inputs["pixel_values"].split(rows)
    assert torch.equal(rep["pixel_values"][:3 * 64], first.repeat(3, 1))
    assert torch.equal(rep["pixel_values"][3 * 64:], second.repeat(3, 1))


def test_split_inputs_gives_unpadded_single_prompts_with_the_same_logits(tiny_dir):
    model, processor = vlm.load(str(tiny_dir))
    inputs = _prompts(processor)
    parts = vlm.split_inputs(inputs)
    assert [p["input_ids"].shape[1] for p in parts] == inputs["attention_mask"].sum(1).tolist()
    with torch.no_grad():
        batched = model(**inputs).logits[:, -1]
        alone = torch.cat([model(**p).logits[:, -1] for p in parts])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)


def test_aliases_resolve_the_model_card_name():
    said = []
    assert models.resolve_name("Qwen/Qwen2.5-VL-3B", said.append) == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in said[0]
    assert models.resolve_name("some/other-model", said.append) == "some/other-model"


def test_missing_local_path_says_check_the_path(tmp_path):
    with pytest.raises(vlm.ModelError, match="check the path"):
        vlm.load(str(tmp_path / "nope"))


def test_hub_id_without_network_says_how_to_pass_a_local_path(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    with pytest.raises(vlm.ModelError, match="pass DIR to --model"):
        vlm.load_processor("someone/not-cached-anywhere-vl")


def test_model_without_chat_template_is_refused(tiny_dir, tmp_path):
    bare = shutil.copytree(tiny_dir, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink()
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(vlm.ModelError, match="no chat template"):
        vlm.load_processor(str(bare))


def test_a_text_only_model_loads_as_a_causal_lm(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    assert type(vlm.load_model(str(tmp_path), "cpu", torch.float32)).__name__ == "GPT2LMHeadModel"


def test_large_model_on_cpu_is_refused_before_loading(tiny_dir, monkeypatch):
    monkeypatch.setattr(models, "CPU_PARAM_LIMIT", 1000)       # the tiny model counts as "large"
    with monkeypatch.context() as m, pytest.raises(vlm.ModelError, match="--allow-cpu"):
        m.setattr(vlm, "load_model", lambda *a: pytest.fail("weights loaded"))
        models.load(str(tiny_dir), "cpu", torch.float32)
    assert models.load(str(tiny_dir), "cpu", torch.float32, allow_cpu=True)[0] is not None


# ---------------------------------------------------------------------------------------------
# InternVL (tiny, -hf classes): tiles per prompt, the family's protocol, the whole loop.

def _internvl_prompts(processor):
    images = [Image.new("RGB", (168, 56), (200, 0, 0)), Image.new("RGB", (56, 56), (0, 0, 200)),
              Image.new("RGB", (112, 112), (0, 200, 0))]        # (w, h) -> 4, 1, 5 tiles
    return vlm.prompt_inputs(processor, images, ["What is this? A. x\nB. y", "Short?", "Q?"])


def test_internvl_prompts_count_tiles_per_prompt(tiny_internvl_dir):
    model, processor = models.load(str(tiny_internvl_dir))     # with the family's tiling
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    inputs = _internvl_prompts(processor)
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}   # nothing extra
    assert inputs["pixel_values"].shape == (10, 3, 56, 56) and inputs.pixel_rows == [4, 1, 5]
    image_tokens = (inputs["input_ids"] == model.config.image_token_id).sum(1)
    assert image_tokens.tolist() == [16, 4, 20]                 # 4 tokens per tile
    text = processor.tokenizer.decode(inputs["input_ids"][1], skip_special_tokens=False)
    assert text.split("<|im_start|>")[1].startswith("user\n")  # no system turn
    moved = vlm.to_device(inputs, "cpu")
    assert moved.pixel_rows == [4, 1, 5]


def test_internvl_repeat_and_split_keep_each_prompts_tiles(tiny_internvl_dir):
    model, processor = models.load(str(tiny_internvl_dir))
    inputs = _internvl_prompts(processor)
    rep = vlm.repeat_inputs(inputs, 2)
    first, second, third = inputs["pixel_values"].split([4, 1, 5])
    assert torch.equal(rep["pixel_values"], torch.cat([first, first, second, second, third, third]))
    assert rep.pixel_rows == [4, 4, 1, 1, 5, 5]
    parts = vlm.split_inputs(inputs)
    assert [p["pixel_values"].shape[0] for p in parts] == [4, 1, 5]
    assert torch.equal(vlm.repeat_inputs(parts[2], 3)["pixel_values"], third.repeat(3, 1, 1, 1))
    with torch.no_grad():
        batched = model(**inputs).logits[:, -1]
        alone = torch.cat([model(**p).logits[:, -1] for p in parts])
        rep_logits = model(**rep).logits[:, -1]
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rep_logits, batched.repeat_interleave(2, 0), atol=1e-4, rtol=1e-4)


def test_unknown_tile_layout_ends_in_one_sentence(tiny_internvl_dir):
    processor = families.set_tiling(vlm.load_processor(str(tiny_internvl_dir)))
    plain = dict(_internvl_prompts(processor))                 # pixel_rows lost: a plain dict
    with pytest.raises(vlm.ModelError, match="vlm.prompt_inputs"):
        vlm.repeat_inputs(plain, 2)


def test_vision_freezing_follows_the_family_unless_told(tiny_internvl_dir, tiny_dir):
    internvl = vlm.load_model(str(tiny_internvl_dir), "cpu", torch.float32)
    assert families.freeze_vision(internvl) is True                 # InternVL default: frozen
    trainable = {n for n, p in internvl.named_parameters() if p.requires_grad}
    assert not any("vision_tower" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable)   # the projector trains
    assert any("language_model" in n for n in trainable)
    qwen = vlm.load_model(str(tiny_dir), "cpu", torch.float32)
    assert families.freeze_vision(qwen) is False and all(p.requires_grad for p in qwen.parameters())
    assert families.freeze_vision(qwen, True) is True
    assert not any(p.requires_grad for n, p in qwen.named_parameters() if "visual" in n)
    fresh = vlm.load_model(str(tiny_internvl_dir), "cpu", torch.float32)
    assert families.freeze_vision(fresh, False) is False and all(p.requires_grad for p in fresh.parameters())


def test_internvl_aliases_and_the_missing_hf_checkpoint():
    said = []
    for name in ("InternVL3-2B", "OpenGVLab/InternVL3-2B"):
        assert models.resolve_name(name, said.append) == "OpenGVLab/InternVL3-2B-hf"
    assert models.resolve_name("OpenGVLab/InternVL3-8B", said.append) == "OpenGVLab/InternVL3-8B-hf"
    assert len(said) == 3
    for name in ("InternVL2.5-4B", "OpenGVLab/InternVL2_5-4B"):
        with pytest.raises(vlm.ModelError, match="no transformers-format.*pass the output directory"):
            models.resolve_name(name)


@pytest.mark.parametrize("shared", [True, False])
def test_the_whole_loop_runs_on_internvl(tiny_internvl_dir, tmp_path, shared):
    from harness import run
    from harness.config import parse_args
    argv = ["--model", str(tiny_internvl_dir), "--num-samples", "2", "--rollouts", "3",
            "--prompts-per-step", "2", "--epochs", "1", "--eval-limit", "4",
            "--max-new-tokens", "3", "--lr", "1e-3", "--quiet", "--device", "cpu",
            "--output-dir", str(tmp_path / "run"),
            "--reward", "random", "--weight-decay", "0"]   # random weights: no vote signal
    cfg = parse_args(argv + ([] if shared else ["--no-shared-prefix"]))
    results = run.run(cfg, tmp_path / "run", log=lambda *a: None)
    assert results["base"]["total"] == 4 and results["adapted"]["total"] == 4
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["updates"] == 2 and metrics[-1]["grad_norm"] > 0
    assert all(m["adv_abs"] > 0 and m["adv_nonzero_share"] > 0 for m in metrics)
    before, after = (vlm.load_model(str(d), "cpu", torch.float32).state_dict()
                     for d in (tiny_internvl_dir, tmp_path / "run" / "model"))
    assert any(not torch.equal(before[k], after[k]) for k in before)   # weight decay 0


def test_eval_py_refuses_a_large_cpu_model_unless_allow_cpu(tiny_dir, monkeypatch, capsys):
    import eval as evaluation
    monkeypatch.setattr(models, "CPU_PARAM_LIMIT", 1000)       # the tiny model counts as "large"
    argv = ["--model", str(tiny_dir), "--limit", "1", "--max-new-tokens", "1", "--device", "cpu"]
    assert eval_cli.main(argv) == 1 and "--allow-cpu" in capsys.readouterr().err
    assert eval_cli.main(argv + ["--allow-cpu"]) == 0
