"""The model seam (vlm.py): loading through the Auto classes, prompt tensors, repeat and split."""

import json
import shutil

import pytest
import torch
from PIL import Image

import vlm


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
    assert vlm.resolve_name("Qwen/Qwen2.5-VL-3B", said.append) == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert "Qwen/Qwen2.5-VL-3B-Instruct" in said[0]
    assert vlm.resolve_name("some/other-model", said.append) == "some/other-model"


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


def test_text_only_model_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(vlm.ModelError, match="not an image-text-to-text model"):
        vlm.load_model(str(tmp_path), "cpu", torch.float32)


def test_large_model_on_cpu_is_refused_before_loading(tiny_dir, monkeypatch):
    monkeypatch.setattr(vlm, "CPU_PARAM_LIMIT", 1000)          # the tiny model counts as "large"
    with pytest.raises(vlm.ModelError, match="--allow-cpu"):
        vlm.load_model(str(tiny_dir), "cpu", torch.float32)
    assert vlm.load_model(str(tiny_dir), "cpu", torch.float32, allow_cpu=True) is not None
