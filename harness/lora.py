"""LoRA through PEFT (--lora-rank R): low-rank adapters train, every weight of the model stays frozen.

Full fine-tuning of the 3B model holds fp32 weights, gradients and two AdamW moments for all
3.75B parameters (about 60 GB) plus a frozen reference copy. With adapters only the adapters
(tens of millions of parameters) carry gradients and moments, and the reference of eq. (1) is the
same model with its adapters switched off, so there is no second copy:

    policy, ref_model = add(model, rank=16, alpha=32, train_vision=False)
    sampler.logprobs(ref_model, ...)          # the loop calls it like any reference model
    checkpoint = for_saving(policy, out / "adapter", merge=True)   # adapters saved; merged model

`policy` is the model itself (the Hugging Face class, PEFT's layers injected in place), so the
samplers see the same object as under full fine-tuning. The adapters start at B = 0 (PEFT's
default), so at the first update the policy and the reference are the same function: KL 0.

Where adapters go (families.FAMILIES' `lora_modules`, default families.LORA_MODULES): the language model's
attention and MLP projections, and every linear layer of the vision tower when the family (or
--no-freeze-vision) trains it. Dropout on the adapters is 0 (ours): with dropout the training
forward would not be the policy that sampled, and the ratio of eq. (1) would be off at step 0.
What it leaves out: torchrun (config.check refuses it; FSDP over PEFT is untested), QLoRA, DoRA.
"""

import warnings

import torch

import vlm
from harness import families


def targets(model, train_vision: bool) -> list[str]:
    """Full names of the linear layers that get adapters (never the output head)."""
    names = families.family(model).get("lora_modules", families.LORA_MODULES)
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
            and (train_vision if families.is_vision(name) else name.rsplit(".", 1)[-1] in names)]


def add(model, rank: int, alpha: float, train_vision: bool):
    """(policy, ref_model): `model` with rank-`rank` adapters (scale alpha / rank) and the same
    model with its adapters switched off (`WithoutAdapters`). Every original weight freezes.
    A rank above the smallest dimension of a layer it adapts is a ModelError (before PEFT): B A
    would then be no longer low-rank, only a larger way to write a full update."""
    from peft import LoraConfig, get_peft_model
    names = targets(model, train_vision)
    layers = dict(model.named_modules())
    dims = {n: min(layers[n].in_features, layers[n].out_features) for n in names}
    smallest = min(dims, key=dims.get, default=None)
    if smallest and rank > dims[smallest]:
        raise vlm.ModelError(f"--lora-rank {rank} is larger than the smallest layer it adapts "
                             f"({smallest}: {layers[smallest].in_features} -> "
                             f"{layers[smallest].out_features}); pass --lora-rank "
                             f"{dims[smallest]} or less.")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                        target_modules=names)
    with warnings.catch_warnings():   # PEFT reads transformers' deprecated is_gradient_checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, config)
    policy = peft_model.get_base_model()          # the same model object, adapters injected
    object.__setattr__(policy, "_peft_model", peft_model)   # a plain attribute, not a submodule
    return policy, WithoutAdapters(peft_model)


class WithoutAdapters(torch.nn.Module):
    """The frozen reference of eq. (1) under LoRA: each forward runs the policy with its adapters
    switched off (PEFT's `disable_adapter`). Every other attribute (model.model, the output
    head, config, modules()) is the policy's, so the samplers read it as they read a model."""

    def __init__(self, peft_model):
        super().__init__()
        object.__setattr__(self, "peft_model", peft_model)          # not submodules: the
        object.__setattr__(self, "policy", peft_model.get_base_model())   # reference owns none

    def forward(self, *args, **kwargs):
        with self.peft_model.disable_adapter():
            return self.policy(*args, **kwargs)

    def modules(self):
        return self.policy.modules()

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "policy"), name)


def for_saving(policy, adapter_dir, merge: bool):
    """The model to write as a checkpoint. Full fine-tuning: `policy` itself. LoRA: the adapters
    are written to `adapter_dir` (PEFT's save_pretrained) and the result is the merged model
    (merge_and_unload: W + (alpha / r) B A, an ordinary checkpoint eval.py loads) when `merge`,
    else None."""
    peft_model = getattr(policy, "_peft_model", None)
    if peft_model is None:
        return policy
    peft_model.save_pretrained(adapter_dir)
    return peft_model.merge_and_unload() if merge else None
