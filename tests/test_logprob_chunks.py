"""Log-probs from hidden states in chunks (grpo.token_logprobs / shared_prefix.scored_forward)
against log_softmax over the full [rows, T, V] logits, written out here as the reference (as is
rollout.logprobs, the plain path): values and gradients in fp32, on Qwen2.5-VL, Qwen2-VL and a
tiny InternVL."""

import pytest
import torch
from transformers import AutoModelForImageTextToText

import grpo
import rollout
import shared_prefix
import vlm
from tests.test_shared_prefix import completions, eos_pad, prompts, load


def full_reference(model, inputs, ids, mask, temperature):
    """The pre-chunking computation: every logit, one log_softmax over [B, T, V]."""
    T = ids.shape[1]
    full = dict(inputs, input_ids=torch.cat([inputs["input_ids"], ids], 1),
                attention_mask=torch.cat([inputs["attention_mask"], mask], 1))
    if "mm_token_type_ids" in inputs:
        full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"],
                                               torch.zeros_like(ids)], 1)
    logits = model(**full, use_cache=False).logits[:, -(T + 1):-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)     # [B, T]


def grads(model, logp, mask):
    model.zero_grad()
    (logp * mask).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_token_logprobs_chunks_equal_full_log_softmax():
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(3, 7, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (3, 7), generator=g)
    ref = torch.log_softmax(head(hidden) / 0.7, -1).gather(-1, targets[..., None]).squeeze(-1)
    ref_grads = torch.autograd.grad(ref.sum(), (hidden, head.weight))
    for chunk in (1, 5, 21, 1000):              # 21 = rows x T; 5 leaves a short last chunk
        out = grpo.token_logprobs(head, hidden, targets, 0.7, chunk=chunk)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        for a, b in zip(torch.autograd.grad(out.sum(), (hidden, head.weight)), ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_backward_keeps_no_chunk_logits(monkeypatch):
    """Checkpointed chunks: the head runs once per chunk forward and once more in the backward,
    and never on more than `chunk` tokens."""
    head = torch.nn.Linear(4, 30, bias=False)
    rows = []
    head.register_forward_hook(lambda m, i, out: rows.append(out.shape[0]))
    hidden = torch.randn(2, 5, 4, requires_grad=True)
    out = grpo.token_logprobs(head, hidden, torch.zeros(2, 5, dtype=torch.long), chunk=4)
    assert rows == [4, 4, 2]
    out.sum().backward()
    assert sorted(rows) == [2, 2, 4, 4, 4, 4]          # recomputed in the backward


@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_qwen2_dir"])
def test_completion_and_shared_logprobs_match_full_reference(fixture, request, monkeypatch):
    model, processor = load(request.getfixturevalue(fixture))
    model.train().activation_checkpointing_enable({"use_reentrant": False})
    monkeypatch.setattr(grpo, "LOGPROB_CHUNK", 5)       # many chunks, a short last one
    inputs, n, temperature = prompts(processor, (0, 1)), 3, 0.7
    ids, mask = completions(2 * n, 4, *eos_pad(processor))
    repeated = vlm.repeat_inputs(inputs, n)
    ref = full_reference(model, repeated, ids, mask, temperature)
    ref_grads = grads(model, ref, mask)
    plain_logp = rollout.logprobs(model, inputs, ids, mask, temperature)
    shared = shared_prefix.logprobs(model, inputs, ids, mask, temperature)
    for got in (plain_logp, shared):
        torch.testing.assert_close(got * mask, ref * mask, rtol=0, atol=1e-5)
        got_grads = grads(model, got, mask)
        assert got_grads.keys() == ref_grads.keys()
        for name, g in ref_grads.items():
            torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_internvl_head_is_found_generically():
    """InternVL (lm_head on the ForConditionalGeneration, Qwen2 text model, 1D rope): a text-only
    forward through the same surfaces gives the full-softmax log-probs."""
    from transformers import InternVLConfig
    config = InternVLConfig(
        text_config=dict(model_type="qwen2", vocab_size=300, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, image_size=28, patch_size=14),
        image_token_id=299)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config).float().eval()
    g = torch.Generator().manual_seed(1)
    inputs = dict(input_ids=torch.randint(0, 290, (2, 6), generator=g),
                  attention_mask=torch.ones(2, 6, dtype=torch.long))
    ids, mask = torch.randint(0, 290, (2, 4), generator=g), torch.ones(2, 4, dtype=torch.long)
    ref = full_reference(model, inputs, ids, mask, 1.3)
    got = rollout.logprobs(model, inputs, ids, mask, 1.3)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    shared = shared_prefix.logprobs(model, inputs, ids, mask, 1.3)
    torch.testing.assert_close(shared, ref, rtol=0, atol=1e-5)


def test_a_head_whose_output_is_changed_is_refused():
    class Scaled(torch.nn.Module):          # a family that rescales its logits after the head
        def __init__(self, model):
            super().__init__()
            self.inner = model

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()

        def set_output_embeddings(self, head):
            self.inner.set_output_embeddings(head)

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits = out.logits * 2
            return out
    head = torch.nn.Linear(4, 10)
    inner = type("M", (torch.nn.Module,), dict(
        get_output_embeddings=lambda self: self.lm_head,
        set_output_embeddings=lambda self, h: setattr(self, "lm_head", h),
        forward=lambda self, x: type("O", (), dict(logits=self.lm_head(x)))()))()
    inner.lm_head = head
    with pytest.raises(RuntimeError, match="changes its head's output"):
        shared_prefix.scored_forward(Scaled(inner), torch.zeros(1, 2, dtype=torch.long), x=torch.randn(1, 3, 4))
