"""Precision and LoRA: an fp32 model made ready for ttrv.adapt, and the frozen reference of eq. (1).

One precision story (ours): the policy keeps fp32 master weights and computes under bf16 autocast
(an AdamW step at lr 5e-7 is far below bf16's resolution; verl's FSDP also keeps fp32 masters),
and the reference makes the same computation: `frozen_reference` stores in bf16 exactly the
weights autocast casts, the rest fp32, so at step 0 the two are one model (KL 0). A copy wholly in
bf16 would be a slightly different model.

    policy, ref_model, autocast = prepare(policy, cfg, reference=lambda: load_fp32_copy())
"""
import torch

from harness import families, lora
from harness.config import bf16_compute
from processes import ONE


def uses_bf16(cfg) -> bool:
    """bf16 autocast under --precision bf16, or auto on a GPU with bf16 (config.bf16_compute)."""
    return bf16_compute(cfg.precision, cfg.device)


def compute_storage(model, compute_dtype=None):
    """Store `model` (fp32, as loaded) in place as bf16 autocast computes with it.

    With compute_dtype bf16 every linear and convolution layer keeps its weights in bf16 and
    every other parameter (norms, embeddings) stays fp32. Under bf16 autocast that is exactly the
    computation of the fp32 model: autocast runs those layers on bf16 copies of the fp32
    weights, the rest in fp32; at 2 bytes per weight, no copies made per forward. A model stored
    wholly in bf16 would also round its norms and embeddings and carry its residual stream in
    bf16: a slightly different model. Tied embeddings are untied so the lookup stays fp32 while
    the output head is bf16. For frozen weights only: trained ones keep fp32 masters.
    """
    if compute_dtype is not None:
        head, embed = model.get_output_embeddings(), model.get_input_embeddings()
        if head is not None and embed is not None and head.weight is embed.weight:
            embed.weight = torch.nn.Parameter(embed.weight.detach().clone(),
                                              requires_grad=embed.weight.requires_grad)
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
                m.to(compute_dtype)
    return model


def frozen_reference(model, compute_dtype=None):
    """The frozen reference of eq. (1) from an fp32 model: stored as autocast computes
    (compute_storage), so at step 0 it is the policy's own computation, eval mode, no grads."""
    return compute_storage(model, compute_dtype).eval().requires_grad_(False)


def prepare(policy, cfg, reference, procs=ONE):
    """(policy, ref_model, autocast): an fp32 model made ready for ttrv.adapt.

    --lora-rank: the reference is `policy` with its adapters off (harness/lora.py), its frozen
    base stored as autocast computes, the adapters trained in fp32; otherwise a frozen copy of
    `reference()` (an fp32 load). The vision tower trains or not as --freeze-vision or the
    family says (harness/families.py); torchrun shards both models (FSDP2, gathered in bf16).
    """
    bf16 = uses_bf16(cfg)
    train_vision = not families.freeze_vision(policy, cfg.freeze_vision)  # None: the family's
    if cfg.lora_rank:
        compute_storage(policy, torch.bfloat16 if bf16 else None)
        policy, ref_model = lora.add(policy, cfg.lora_rank, cfg.lora_alpha or 2 * cfg.lora_rank,
                                     train_vision)
    else:
        ref_model = frozen_reference(reference(), torch.bfloat16 if bf16 else None)
        ref_model.to(next(policy.parameters()).device)
    if cfg.gradient_checkpointing:
        policy.activation_checkpointing_enable({"use_reentrant": False})  # ("gradient checkpointing")
    policy.train()
    procs.shard(policy, ref_model, bf16)   # torchrun: FSDP2, both gathered in bf16
    return policy, ref_model, torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=bf16)
