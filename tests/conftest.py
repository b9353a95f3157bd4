"""Shared fixtures: tiny models built offline once per test session; `shared_path`, the one way
tests find ../shared (the paper notes, the real checkpoints' files); `steer`, a tiny VLM whose
answers are set by hand, so that no test depends on what a taught model happened to learn (that
differs by CPU)."""

import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from harness import tiny
from harness.tiny import build_tiny_model
import vlm

SHARED = Path(__file__).resolve().parents[1].parent / "shared"   # beside the repository


def shared_path(*parts) -> Path:
    """The path ../shared/<parts> beside the repository. When it is absent the calling test (or
    fixture) skips with a one-line reason, unless the environment variable CI is "true": there
    it fails, so CI cannot pass by skipping."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"{path} is absent (../shared beside the repository)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true needs it", pytrace=False)
        pytest.skip(reason)
    return path


def steer(src, out, first: dict, then: dict) -> Path:
    """A copy of the tiny Qwen VLM in `src` whose next token depends only on the token before
    it: after an option letter (A-D) its logits are `then` ({token: logit}), after any other
    token `first`; every other token gets logit -30. So a response starts with a token drawn
    from `first` (greedy: its largest) and, after a letter, one from `then`.

    How: the decoder layers' output projections are zeroed (the residual stream is the token's
    embedding), every embedding is one of two unit vectors (letter or not), the final norm's
    weight is 1 and an untied lm_head holds the logits, over sqrt(hidden) (the norm's scale).
    """
    import vlm
    model, processor = vlm.load(str(src))
    tok, text = processor.tokenizer, model.model.language_model
    hidden = text.embed_tokens.weight.shape[1]
    letters = tok.convert_tokens_to_ids(list("ABCD"))
    embed = torch.zeros_like(text.embed_tokens.weight)                          # [V, H]
    embed[:, 0] = 1.0
    embed[letters, 0], embed[letters, 1] = 0.0, 1.0
    head = torch.full_like(embed, -30.0 / math.sqrt(hidden))                    # [V, H]
    for dim, logits in enumerate((first, then)):
        for token, logit in logits.items():
            head[tok.convert_tokens_to_ids(token), dim] = logit / math.sqrt(hidden)
    with torch.no_grad():
        for layer in text.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        text.embed_tokens.weight.copy_(embed)
        text.norm.weight.fill_(1.0)
    model.config.tie_word_embeddings = model.config.get_text_config().tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return Path(out)


def plain_logits(policy, inputs, roll, n, temperature):
    """log pi_T at every completion position, by one plain forward with full logits."""
    rep = dict(vlm.repeat_inputs(inputs, n))
    ids, mask = roll.completion_ids, roll.mask
    P, T_ = rep["input_ids"].shape[1], ids.shape[1]
    rep["input_ids"] = torch.cat([rep["input_ids"], ids], 1)
    rep["attention_mask"] = torch.cat([rep["attention_mask"], mask.to(rep["attention_mask"])], 1)
    if "mm_token_type_ids" in rep:
        rep["mm_token_type_ids"] = torch.cat([rep["mm_token_type_ids"], torch.zeros_like(ids)], 1)
    with torch.no_grad():
        logits = policy(**rep).logits[:, P - 1:P - 1 + T_].float() / temperature  # [B*n, T, V]
    return torch.log_softmax(logits, -1)


def random_text_lm(vocab_size, max_positions):
    """A random-weight two-layer Qwen2 text LM (torch seed 0) in eval mode, for sampler tests."""
    from transformers import AutoModelForCausalLM, Qwen2Config
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=max_positions)
    return AutoModelForCausalLM.from_config(cfg).eval()


# The voter: answers a bare letter drawn from these logits (greedy: A), then ends.
VOTER = ({"A": 0.5, "B": 0.0, "C": 0.0, "D": 0.0}, {"<|im_end|>": 0.0})


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random-weight tiny Qwen2.5-VL checkpoint directory (config, weights, processor)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2_5_vl"), arch="qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory):
    """The same, as a Qwen2-VL: a second architecture for the model-seam tests."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2_vl"), arch="qwen2_vl")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_internvl_dir(tmp_path_factory):
    """A random-weight tiny InternVL (-hf classes): 56x56 tiles, 4 image tokens per tile."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_internvl"), arch="internvl")


@pytest.fixture(scope="session")
def voter_dir(tiny_dir, tmp_path_factory):
    """A tiny Qwen2.5-VL that answers every question with a bare letter drawn at random (VOTER,
    through steer): its samples disagree, so the loop's vote rewards differ within a group and
    it learns, on every CPU."""
    return steer(tiny_dir, tmp_path_factory.mktemp("voter"), *VOTER)


@pytest.fixture(scope="session")
def tiny_cache(voter_dir, tmp_path_factory):
    """A cache directory ($TTRV_CACHE) in which `--model tiny` is voter_dir's model: the name's
    whole path (tiny.tiny_model_path, its cache key) without building the taught model."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny, "build_taught", lambda tmp, name, log=None: shutil.copytree(
            voter_dir, tmp, dirs_exist_ok=True))
        tiny.tiny_model_path("tiny", cache_dir=cache, log=lambda *a: None)
    return cache


def pytest_configure(config):
    config.addinivalue_line("markers", "tiny_model: runs the steered tiny model (voter_dir, "
                            "tiny_cache); .ci/run runs these again under another CPU capability")


def pytest_collection_modifyitems(items):
    for item in items:
        if {"voter_dir", "tiny_cache"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.tiny_model)
