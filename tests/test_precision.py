"""One precision story under --precision bf16 (CPU autocast here): the policy, the reference and
the saved model compute the same way, so the first update's KL is exactly 0; a GPU without bf16
gets fp32 (auto) or one sentence (--precision bf16), never a crash."""

import dataclasses
import json

import pytest
import torch

import eval as evaluation
import ttrv
from harness.run import load_models
from harness.config import parse_args
from harness import cli, config, eval_cli, presets

SMALL = ["--num-samples", "1", "--rollouts", "6", "--prompts-per-step", "1", "--epochs", "1",
         "--max-new-tokens", "4", "--quiet", "--precision", "bf16", "--beta", "0.1"]


@pytest.mark.parametrize("fixture", ["tiny_dir", "tiny_internvl_dir"])
def test_the_first_update_under_bf16_has_a_kl_of_exactly_zero(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    cfg = dataclasses.replace(parse_args(["--model", str(model_dir), *SMALL]), device="cpu")
    setup, _ = load_models(cfg, log=lambda *a: None)
    policy, ref_model, autocast = setup.policy, setup.ref_model, setup.autocast
    linear = next(m for m in ref_model.modules() if isinstance(m, torch.nn.Linear))
    assert linear.weight.dtype == torch.bfloat16                      # what autocast computes with
    assert ref_model.get_input_embeddings().weight.dtype == torch.float32   # as the policy's
    assert next(policy.parameters()).dtype == torch.float32 and autocast.fast_dtype == torch.bfloat16
    history = ttrv.adapt(setup, presets.load_dataset("shapes")[:1], cfg)
    assert history[0]["updates"] == 1 and history[0]["kl"] == 0.0
    assert 0 <= history[0]["ratio_dev"] < 0.05             # sampler vs training forward, bf16


def test_eval_py_scores_the_saved_model_as_the_run_scored_it(tmp_path, tiny_dir, monkeypatch):
    """eval.py --precision bf16 on a run's model (saved in fp32) computes as the run's own
    evaluations did (fp32 weights under bf16 autocast) and gives the run's adapted answers."""
    seen, real = [], evaluation.evaluate

    def recording(model, *a, autocast=None, **kw):
        on = autocast is not None and autocast._enabled
        seen.append((next(model.parameters()).dtype, autocast.fast_dtype if on else None))
        return real(model, *a, autocast=autocast, **kw)
    monkeypatch.setattr(evaluation, "evaluate", recording)
    out = tmp_path / "run"
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--eval-limit", "16", "--save-dtype",
                     "fp32", "--output-dir", str(out), "--eval-batch-size", "8"]) == 0
    run = [json.loads(x)["response"] for x in
           (out / "predictions_adapted.jsonl").read_text().splitlines()]
    assert set(seen) == {(torch.float32, torch.bfloat16)}
    seen.clear()
    assert eval_cli.main(["--model", str(out), "--limit", "16", "--max-new-tokens", "4",
                          "--batch-size", "8", "--device", "cpu", "--precision", "bf16",
                          "--output", str(tmp_path / "p.jsonl")]) == 0
    assert seen == [(torch.float32, torch.bfloat16)]
    assert [json.loads(x)["response"] for x in (tmp_path / "p.jsonl").read_text().splitlines()] == run


def test_a_gpu_without_bf16_gets_fp32_or_one_sentence(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert config.bf16_compute("auto", "cuda") is False                 # fp32 on such a GPU
    assert config.bf16_compute("auto", "cpu") is False and config.bf16_compute("bf16", "cpu")
    with pytest.raises(SystemExit) as stop:
        config.parse_args(["--device", "cuda", "--precision", "bf16"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "has no bf16" in err and "--precision fp32" in err
    assert config.parse_args(["--device", "cuda"]).precision == "auto"  # auto is accepted
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert config.bf16_compute("auto", "cuda") is True
