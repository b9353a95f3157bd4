"""harness/lora.py on a small random text LM, the adapters set by hand (B != 0): the reference is
the policy with its adapters off, only adapters train, adapters sit on the named projections
only (never the head), there is no dropout, the scale is alpha / rank, and saving writes the
adapters and a merged model that computes what the policy computes. Seconds, no run."""

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from harness import families, lora

RANK, ALPHA = 4, 12.0


def base():
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return AutoModelForCausalLM.from_config(cfg).eval()


def with_adapters():
    """(policy, ref_model, logits of the model before adapters), the adapters' B set non-zero."""
    model = base()
    with torch.no_grad():
        before = model(INPUT).logits
    policy, ref = lora.add(model, rank=RANK, alpha=ALPHA, train_vision=False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return policy, ref, before


INPUT = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(2))


def test_the_reference_is_the_policy_with_its_adapters_off():
    policy, ref, before = with_adapters()
    with torch.no_grad():
        now, reference = policy(INPUT).logits, ref(INPUT).logits
        after = policy(INPUT).logits                   # the reference switched nothing off for good
    torch.testing.assert_close(reference, before, rtol=1e-5, atol=1e-6)
    assert (now - before).abs().max() > 1e-3
    torch.testing.assert_close(after, now, rtol=0, atol=0)
    assert list(ref.parameters()) == [] and ref.policy is policy


def test_only_the_adapters_train_and_they_sit_on_the_named_projections():
    policy, _, _ = with_adapters()
    trained = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    adapted = {n.split(".lora_")[0] for n in trained}
    assert {n.rsplit(".", 1)[-1] for n in adapted} == set(families.LORA_MODULES)
    assert not any("lm_head" in n or "embed" in n for n in adapted)


def test_the_training_forward_is_the_sampling_forward():
    """No adapter dropout: in train mode the policy computes what it sampled with (ratio 1)."""
    policy, _, _ = with_adapters()
    with torch.no_grad():
        sampled = policy(INPUT).logits
        policy.train()
        trained = [policy(INPUT).logits for _ in range(3)]
        policy.eval()
    for t in trained:
        torch.testing.assert_close(t, sampled, rtol=0, atol=0)


def test_the_update_is_w_plus_alpha_over_rank_b_a(tmp_path):
    policy, _, _ = with_adapters()
    layer = policy.model.layers[0].self_attn.q_proj
    w = layer.base_layer.weight.detach().clone()
    delta = ALPHA / RANK * (layer.lora_B["default"].weight @ layer.lora_A["default"].weight)
    with torch.no_grad():
        expected = policy(INPUT).logits
    merged = lora.for_saving(policy, tmp_path / "adapter", merge=True)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged.model.layers[0].self_attn.q_proj.weight, w + delta.detach())
    with torch.no_grad():
        torch.testing.assert_close(merged(INPUT).logits, expected, rtol=1e-4, atol=1e-5)


def test_the_saved_adapters_reload_onto_the_base_model(tmp_path):
    from peft import PeftModel
    policy, _, _ = with_adapters()
    with torch.no_grad():
        expected = policy(INPUT).logits
    assert lora.for_saving(policy, tmp_path / "adapter", merge=False) is None
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    reloaded = PeftModel.from_pretrained(base(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(INPUT).logits, expected, rtol=1e-4, atol=1e-5)


def test_full_fine_tuning_saves_the_policy_itself(tmp_path):
    model = base()
    assert lora.for_saving(model, tmp_path / "adapter", merge=True) is model
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize("train_vision", [False, True])
def test_a_text_model_has_no_vision_targets(train_vision):
    assert lora.targets(base(), train_vision) == lora.targets(base(), False)
