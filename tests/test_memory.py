"""Memory without changing the maths: fused AdamW on CUDA, the reference log-probs once per rollout,
micro-batches cut to their own longest row (rows sorted by length), the default micro-batch on a
GPU, the KV cache in the compute dtype. Each test compares against the plain computation."""

import dataclasses

import pytest
import torch

from harness import bench
import grpo
import rollout
import shared_prefix
import ttrv
from harness.config import parse_args
import vlm
from harness import config, presets

LENGTHS = [1, 4, 2, 4, 1, 3]           # six responses; the group is padded to T = 5


@pytest.fixture(scope="module")
def models(tiny_dir):
    """Tiny policy, a reference with other weights (so the KL term is not 0), one prompt."""
    policy, processor = vlm.load(str(tiny_dir))
    ref = vlm.load_model(str(tiny_dir), "cpu", torch.float32).eval().requires_grad_(False)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    policy.activation_checkpointing_enable({"use_reentrant": False})
    policy.train()
    image = presets.load_dataset("shapes")[0].image()
    one = vlm.split_inputs(vlm.prompt_inputs(processor, [image], ["Which shape?"]))[0]
    return policy, ref, one


def group(T=5):
    g = torch.Generator().manual_seed(0)
    rows = len(LENGTHS)
    ids = torch.randint(7, 300, (rows, T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]).float()      # [6, 5]
    old = -torch.rand(rows, T, generator=g) - 5
    return ids, mask, old * mask, torch.randn(rows, generator=g)


def cfg_of(agg="token_mean", micro=2, beta=0.1):
    return dataclasses.replace(config.Config(), device="cpu", loss_agg=agg, micro_batch=micro,
                               beta=beta)


def grads(model):
    out = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return out


class Spy:
    """The shared-prefix sampler, recording the shape of every batch of responses it scores."""
    def __init__(self):
        self.shapes = []

    def logprobs(self, model, prompt, ids, mask, temperature=1.0):
        self.shapes.append(tuple(ids.shape))
        return shared_prefix.logprobs(model, prompt, ids, mask, temperature)


def test_adamw_is_fused_when_every_parameter_is_on_cuda(monkeypatch):
    on_meta = [torch.nn.Parameter(torch.zeros(3, device="meta"))]
    on_cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert grpo.adamw(on_meta, 1e-3, 0.01).defaults["fused"] is None   # torch's default kept
    assert grpo.adamw(on_cpu, 1e-3, 0.01).defaults["fused"] is None
    monkeypatch.setattr(grpo, "_on_cuda", lambda p: True)               # as if on a GPU
    optimizer = grpo.adamw(on_cpu, 1e-3, 0.01)
    assert optimizer.defaults["fused"] is True and optimizer.defaults["foreach"] is None
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["weight_decay"] == 0.01
    on_cpu[0].grad = torch.ones(3)
    optimizer.step()                                  # the fused kernel also runs on the CPU
    assert torch.allclose(on_cpu[0].detach(), torch.full((3,), -1e-3), atol=1e-6)


def test_the_loop_and_bench_build_their_optimizer_with_grpo_adamw(monkeypatch, tiny_dir):
    made = []
    real = grpo.adamw
    monkeypatch.setattr(grpo, "adamw", lambda params, *a: made.append(list(params)) or
                        real(made[-1], *a))
    args = bench.parse_args(["--tiny-dir", str(tiny_dir), "--prompts", "1", "--eval-images", "1"])
    env = bench.setup(args)
    assert len(made) == 1 and made[0] == env.params
    cfg = dataclasses.replace(parse_args(["--num-samples", "1", "--rollouts", "2",
                                               "--epochs", "1", "--max-new-tokens", "1",
                                               "--quiet"]), device="cpu")
    ttrv.adapt(ttrv.Setup(env.policy, env.ref, None, env.autocast), [], cfg)   # no batches
    assert len(made) == 2 and made[1] == env.params


def test_reference_at_rollout_time_equals_the_reference_in_each_micro_batch(models):
    """ttrv.experience computes log pi_ref once per group; computing it inside each micro-batch
    of the update instead (the same chunks, unsorted) gives the same loss and gradient."""
    policy, ref, one = models
    ids, mask, old, adv = group()
    cfg = cfg_of()
    s = ttrv.Setup(policy, ref, None, torch.autocast("cpu", enabled=False))
    g = ttrv.experience(s, rollout.Experience(one, ids, mask, old, None, adv), cfg)
    stats = ttrv.backward(s, g, cfg, float(mask.sum()), 1.0)
    new = grads(policy)
    loss = 0.0
    for c in range(0, len(LENGTHS), 2):
        rows = slice(c, c + 2)
        with torch.no_grad():
            ref_logp = shared_prefix.logprobs(ref, one, ids[rows], mask[rows])
        logp = shared_prefix.logprobs(policy, one, ids[rows], mask[rows])
        part, _ = grpo.grpo_loss(logp, old[rows], ref_logp, adv[rows], mask[rows], beta=cfg.beta)
        (part * mask[rows].sum() / mask.sum()).backward()
        loss += float(part.detach() * mask[rows].sum() / mask.sum())
    assert stats["kl"] > 0
    assert stats["loss"] == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(new, grads(policy), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("agg", ["token_mean", "sequence_mean", "dr_grpo"])
def test_micro_batches_are_cut_to_their_longest_row_and_give_the_same_gradient(models, agg):
    """Rows sorted longest first, each chunk of 2 trimmed to its own longest row: the loss and
    gradient of the whole untrimmed, unsorted group in one piece (dr_grpo divides by the
    group's T = 5 in every chunk)."""
    policy, ref, one = models
    ids, mask, old, adv = group()
    cfg, spy = cfg_of(agg), Spy()
    off = torch.autocast("cpu", enabled=False)
    total = float(mask.sum()) if agg == "token_mean" else len(LENGTHS)
    s = ttrv.Setup(policy, ref, None, off, spy)
    g = ttrv.experience(s, rollout.Experience(one, ids, mask, old, None, adv), cfg)
    assert g.mask.sum(1).tolist() == sorted(LENGTHS, reverse=True) and g.ids.shape == (6, 5)
    stats = ttrv.backward(s, g, cfg, total, 1.0)
    assert spy.shapes == [(2, 4), (2, 3), (2, 1)] * 2        # reference, then policy, per chunk
    trimmed = grads(policy)
    with torch.no_grad():
        ref_logp = shared_prefix.logprobs(ref, one, ids, mask)
    loss, whole = grpo.grpo_loss(shared_prefix.logprobs(policy, one, ids, mask), old, ref_logp, adv,
                                 mask, beta=cfg.beta, aggregation=agg, max_len=5)
    loss.backward()
    assert stats["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    assert stats["ratio_max"] == pytest.approx(whole["ratio_max"], rel=1e-6)
    torch.testing.assert_close(trimmed, grads(policy), rtol=1e-4, atol=1e-7)


def test_length_chunks_never_cut_a_response():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    assert grpo.length_chunks(mask, 2) == [(slice(0, 2), 3), (slice(2, 3), 1)]
    assert grpo.length_chunks(mask) == [(slice(0, 3), 3)]
    assert grpo.by_length(torch.tensor([[1, 0], [1, 1], [1, 0]]).float()).tolist() == [1, 0, 2]


def test_micro_batch_defaults_to_8_rows_on_a_gpu_only():
    assert config.micro_batch_for(config.Config(device="cuda")) == config.CUDA_MICRO_BATCH == 8
    assert config.micro_batch_for(config.Config(device="cpu")) is None       # the whole group
    assert config.micro_batch_for(config.Config(device="cuda", micro_batch=4)) == 4
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(config.Config)}
    assert "default: 8 on a GPU" in help_text["micro_batch"]


def test_the_kv_cache_is_kept_in_bf16_under_bf16_autocast_and_changes_no_result(tiny_dir,
                                                                                 monkeypatch):
    model, processor = vlm.load(str(tiny_dir))
    model.eval()
    images = [e.image() for e in presets.load_dataset("shapes")[:2]]
    inputs = vlm.prompt_inputs(processor, images, ["Which shape?", "And this one?"])
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    with torch.no_grad(), bf16:
        cache = shared_prefix._ComputeCache()
        logits, start = rollout.prefill(model, inputs, cache)
        assert {(l.keys.dtype, l.values.dtype) for l in cache.layers} == {(torch.bfloat16,) * 2}
        step = torch.full((2, 1), 300)
        model(input_ids=step, attention_mask=torch.cat([inputs["attention_mask"],
                                                        torch.ones_like(step)], 1),
              position_ids=start, past_key_values=cache, use_cache=True)   # one decode step
        assert {l.keys.dtype for l in cache.layers} == {torch.bfloat16}
        assert cache.get_seq_length() == inputs["input_ids"].shape[1] + 1
    opts = dict(temperature=1.0, top_p=1.0, max_new_tokens=4, eos_token_ids=[2], pad_token_id=0)

    def run():
        torch.manual_seed(0)
        with bf16:
            roll = shared_prefix.sample(model, inputs, 3, **opts)
            with torch.no_grad():
                logp = shared_prefix.logprobs(model, inputs, roll.completion_ids, roll.mask)
        return roll, logp
    roll, logp = run()
    monkeypatch.setattr(shared_prefix, "_ComputeCache", shared_prefix.DynamicCache)   # an fp32 cache
    roll32, logp32 = run()
    assert torch.equal(roll.completion_ids, roll32.completion_ids)
    assert torch.equal(roll.logprobs, roll32.logprobs) and torch.equal(logp, logp32)
