"""--lora-rank R (lora.py, PEFT): adapters train, every original weight stays; the reference is the
same model with its adapters off (no second copy), so the first update's KL is exactly 0; the
run saves the adapters and, with --merge-lora, a merged checkpoint that eval.py loads."""

import dataclasses
import json

import pytest
import torch

import grpo
from harness import lora
import shared_prefix
import ttrv
from harness.run import load_models
from harness.config import parse_args
import vlm
from harness import cli, eval_cli, families, presets

SMALL = ["--num-samples", "2", "--rollouts", "6", "--prompts-per-step", "2", "--epochs", "1",
         "--max-new-tokens", "4", "--quiet", "--eval-limit", "8"]


def test_adapters_go_on_the_language_projections_and_the_vision_tower_as_the_family_says(
        tiny_dir, tiny_internvl_dir):
    qwen = vlm.load_model(str(tiny_dir), "cpu", torch.float32)
    frozen, trained = lora.targets(qwen, False), lora.targets(qwen, True)
    assert frozen and all("language_model" in n for n in frozen)
    assert {n.rsplit(".", 1)[-1] for n in frozen} == set(families.LORA_MODULES)
    assert set(trained) - set(frozen) and all(families.is_vision(n) for n in set(trained) - set(frozen))
    assert not any("lm_head" in n for n in trained)
    internvl = vlm.load_model(str(tiny_internvl_dir), "cpu", torch.float32)
    names = lora.targets(internvl, not families.freeze_vision(internvl))   # the family: tower frozen
    assert not any(families.is_vision(n) for n in names)
    assert {"model.multi_modal_projector.linear_1", "model.multi_modal_projector.linear_2"} <= set(names)


def test_the_first_lora_update_has_a_kl_of_exactly_zero_and_trains_only_the_adapters(
        tiny_dir, monkeypatch):
    made, real = [], grpo.adamw
    monkeypatch.setattr(grpo, "adamw", lambda params, *a: made.append(list(params)) or
                        real(made[-1], *a))
    cfg = dataclasses.replace(parse_args(["--model", str(tiny_dir), *SMALL, "--lora-rank",
                                               "8", "--reward", "random", "--beta", "0.1",
                                               "--lr", "1e-2", "--epochs", "2"]), device="cpu")
    setup, _ = load_models(cfg, log=lambda *a: None)
    policy, ref_model = setup.policy, setup.ref_model
    assert list(ref_model.parameters()) == [] and ref_model.policy is policy   # no second copy
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    history = ttrv.adapt(setup, presets.load_dataset("shapes")[:2], cfg)
    trained = {id(p) for p in made[0]}
    names = {k for k, p in policy.named_parameters() if id(p) in trained}
    assert names and all(".lora_A." in k or ".lora_B." in k for k in names)
    changed = {k for k, v in policy.named_parameters() if not torch.equal(v, before[k])}
    assert changed and changed <= names                       # the original weights never move
    assert all(h["grad_norm"] > 0 for h in history) and history[-1]["kl"] > 0


def test_the_reference_is_the_policy_with_its_adapters_off(tiny_dir):
    """One update under bf16: the policy's log-probs at the first update are the reference's
    exactly (KL exactly 0); after it the adapters have moved, and the reference is still the
    model without them."""
    cfg = dataclasses.replace(parse_args(["--model", str(tiny_dir), *SMALL, "--lora-rank",
                                               "8", "--reward", "random", "--num-samples", "1",
                                               "--prompts-per-step", "1", "--beta", "0.1",
                                               "--precision", "bf16"]),
                              device="cpu")
    setup, _ = load_models(cfg, log=lambda *a: None)
    policy, ref_model, processor, autocast = setup.policy, setup.ref_model, setup.processor, setup.autocast
    trained = {p.dtype for p in policy.parameters() if p.requires_grad}
    frozen = {n: p.dtype for n, p in policy.named_parameters() if not p.requires_grad}
    assert trained == {torch.float32}                       # the adapters: fp32 masters
    assert frozen["model.language_model.layers.0.self_attn.q_proj.base_layer.weight"] == \
        torch.bfloat16 and frozen["model.language_model.norm.weight"] == torch.float32
    history = ttrv.adapt(setup, presets.load_dataset("shapes")[:1], cfg)
    assert history[0]["updates"] == 1 and history[0]["kl"] == 0.0 and history[0]["grad_norm"] > 0
    prompt = vlm.split_inputs(vlm.prompt_inputs(processor, [presets.load_dataset("shapes")[0]
                                                            .image()], ["Which shape?"]))[0]
    ids, mask = torch.tensor([[300, 301, 302]]), torch.ones(1, 3)
    with torch.no_grad(), autocast:
        now, ref = (shared_prefix.logprobs(m, prompt, ids, mask) for m in (policy, ref_model))
        with ref_model.peft_model.disable_adapter():
            base = shared_prefix.logprobs(policy, prompt, ids, mask)
    assert not torch.equal(now, ref) and torch.equal(ref, base)


def test_lora_cli_saves_the_adapters_and_a_merged_model_that_eval_py_loads(tmp_path, tiny_dir,
                                                                          capsys):
    out = tmp_path / "run"
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--lora-rank", "8", "--merge-lora",
                     "--reward", "random", "--output-dir", str(out)]) == 0
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16 and adapter["lora_dropout"] == 0.0
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    merged = vlm.load_model(str(out / "model"), "cpu", torch.float32)
    assert not any("lora" in k for k, _ in merged.named_parameters())
    results = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert eval_cli.main(["--model", str(out), "--limit", "8", "--max-new-tokens", "4",
                          "--device", "cpu"]) == 0
    assert f"accuracy {results['adapted']['accuracy']:.4f}" in capsys.readouterr().out
    (out / "model").rename(out / "merged")                   # as if run without --merge-lora
    assert eval_cli.main(["--model", str(out), "--device", "cpu"]) == 1
    assert "rerun with --merge-lora" in capsys.readouterr().err


def test_lora_flags_are_checked_before_anything_loads(capsys, monkeypatch):
    for argv, words in ((["--merge-lora"], "pass --lora-rank"), (["--lora-alpha", "4"], "pass --lora-rank"),
                        (["--lora-rank", "0"], "--lora-rank 0 is out of range")):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert words in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        parse_args(["--lora-rank", "8"])
    assert "without torchrun" in capsys.readouterr().err
