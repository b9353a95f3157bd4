"""The whole loop (ttrv.py): the real command line end to end, and what the loop promises."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import data
from harness import presets
import eval as evaluation
import ttrv
import vlm
from harness import cli, run, tiny
from harness.config import Config, parse_args
from conftest import steer

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--num-samples", "4", "--rollouts", "6", "--prompts-per-step", "2", "--epochs", "1",
         "--eval-limit", "24", "--max-new-tokens", "4", "--quiet"]


def config(model_dir, **kw):
    cfg = parse_args(["--model", str(model_dir)] + SMALL)
    return dataclasses.replace(cfg, device="cpu", **kw)


def run_adapt(cfg, examples):
    s, _ = run.load_models(cfg, log=lambda *a: None)
    history = ttrv.adapt(s, examples, cfg)
    return s.policy, history


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_cli_end_to_end_writes_every_output_and_the_model_loads_back(tmp_path, tiny_cache):
    """`--model tiny` from the cache (conftest.tiny_cache: there it is the voter, whose samples
    disagree on every CPU, so every step has non-zero advantages)."""
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "ttrv.py"), "--model", "tiny", *SMALL, "--weight-decay",
           "0", "--output-dir", str(out)]
    env = dict(os.environ, TTRV_CACHE=str(tiny_cache),            # `tiny` finds the cached build
               OMP_NUM_THREADS="1")
    taught_dir = tiny.tiny_model_path("tiny", cache_dir=tiny_cache, log=lambda *a: None)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "base" in proc.stdout and "adapted" in proc.stdout and "delta" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["rollouts"] == 6 and config["lr"] == 1e-4       # tiny presets apply to 'tiny'
    assert config["resolved_model"] == str(taught_dir)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and steps[-1]["updates"] == 4
    for key in ("reward", "answer_entropy", "majority_share", "kl", "clip_frac", "lr", "seconds"):
        assert key in steps[0]
    assert all(math.isfinite(v) for m in steps for v in m.values())
    assert all(m["adv_abs"] > 0 and m["adv_nonzero_share"] > 0 for m in steps)   # it learns
    assert all(m["grad_norm"] > 0 for m in steps)
    taught, adapted = (vlm.load_model(str(d), "cpu", torch.float32).state_dict()
                       for d in (taught_dir, out / "model"))
    assert any(not torch.equal(taught[k], adapted[k]) for k in taught)   # weight decay 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"base", "adapted", "trajectory"} and results["base"]["total"] == 24
    for key in ("base", "adapted"):
        lines = (out / f"predictions_{key}.jsonl").read_text().splitlines()
        assert len(lines) == 24 and {"id", "response", "prediction", "answer", "correct"} <= set(
            json.loads(lines[0]))
    reload = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--model", str(out / "model"),
                             "--limit", "24", "--max-new-tokens", "4"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert reload.returncode == 0, reload.stderr[-2000:]
    assert f"accuracy {results['adapted']['accuracy']:.4f}" in reload.stdout  # same model, same answers


def test_labels_are_never_read_during_adaptation(voter_dir):
    test = presets.load_dataset("shapes", "test")[:4]
    cfg = config(voter_dir, lr=1e-3, weight_decay=0.0)
    labelled, history = run_adapt(cfg, test)
    stripped, _ = run_adapt(cfg, [data.strip_labels(e) for e in test])
    assert all(m["adv_abs"] > 0 for m in history)                      # a loop that learns
    initial = params(vlm.load_model(str(voter_dir), "cpu", torch.float32))
    after, after_stripped = params(labelled), params(stripped)
    assert any(not torch.equal(initial[k], after[k]) for k in after)   # the updates did something
    for k in after:
        assert torch.equal(after[k], after_stripped[k]), k


def test_one_update_at_the_paper_lr_changes_weights_under_bf16_autocast(voter_dir):
    """fp32 master weights keep a 5e-7 step that bf16 weights would round away. No weight decay
    and no KL term: only the policy gradient of non-zero advantages can move them."""
    w = torch.tensor([0.5, 1.0, -2.0])
    assert torch.equal((w.bfloat16() - 5e-7).float(), w.bfloat16().float())  # the bf16 trap
    cfg = config(voter_dir, lr=5e-7, precision="bf16", epochs=1, num_samples=1,
                 prompts_per_step=1, weight_decay=0.0, beta=0.0)
    before = params(vlm.load_model(str(voter_dir), "cpu", torch.float32))
    policy, history = run_adapt(cfg, data.draw_adaptation_set(presets.load_dataset("shapes"), 1, 3))
    assert history[0]["updates"] == 1 and history[0]["adv_abs"] > 0    # a gradient, not decay
    changed = [k for k, v in params(policy).items() if not torch.equal(v, before[k])]
    assert next(policy.parameters()).dtype == torch.float32 and changed


def test_a_second_architecture_runs_through_the_same_loop_and_learns(tiny_qwen2_dir):
    """Random weights never answer in format, so every vote reward would be equal within a
    group (A = 0); the random reward gives the loop a signal to learn from."""
    cfg = config(tiny_qwen2_dir, lr=1e-3, beta=0.1, reward="random", weight_decay=0.0)
    before = params(vlm.load_model(str(tiny_qwen2_dir), "cpu", torch.float32))
    policy, history = run_adapt(cfg, presets.load_dataset("shapes")[:4])
    assert type(policy).__name__ == "Qwen2VLForConditionalGeneration"
    assert len(history) == 2 and all(math.isfinite(v) for h in history for v in h.values())
    assert all(h["adv_abs"] > 0 and h["grad_norm"] > 0 for h in history)
    assert any(not torch.equal(v, before[k]) for k, v in params(policy).items())


def test_an_existing_run_is_never_overwritten(tmp_path, tiny_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("earlier")
    code = cli.main(["--model", str(tiny_dir), *SMALL, "--output-dir", str(out)])
    assert code == 1 and "--overwrite" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "earlier"


def test_unknown_dataset_ends_in_one_sentence_listing_the_known_ones(tmp_path, tiny_dir, capsys):
    code = cli.main(["--model", str(tiny_dir), "--dataset", "nope", "--output-dir",
                      str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "resisc45" in err and "shapes" in err and "Traceback" not in err


def test_help_groups_every_flag():
    text = subprocess.run([sys.executable, str(ROOT / "ttrv.py"), "--help"], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, COLUMNS="200")).stdout
    for group in ("model:", "data:", "rollouts:", "reward:", "optimisation:", "evaluation:",
                  "output:"):
        assert group in text
    assert "--no-shared-prefix" in text and "(default: 5e-07; 0.0001 for --model tiny)" in text
    assert "{ttrv,frequency,diversity,majority,random,dare,self-certainty,entropy}" in text


def test_the_config_fills_every_setting_of_the_algorithm_with_its_defaults():
    """ttrv.Settings holds the paper's values; Config (every flag, --help) must agree with it
    for a paper run, and run.settings must carry every field over."""
    defaults = {f.name: f.default for f in dataclasses.fields(ttrv.Settings)}
    config_defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    assert {k: config_defaults[k] for k in defaults} == defaults
    cfg = dataclasses.replace(Config(), **{k: f"set-{k}" for k in defaults})
    assert dataclasses.asdict(run.settings(cfg)) == {k: f"set-{k}" for k in defaults}


def test_defaults_follow_the_paper():
    cfg = parse_args(["--model", "Qwen/Qwen2.5-VL-3B"])
    assert (cfg.num_samples, cfg.rollouts, cfg.temperature, cfg.alpha, cfg.lr) == (20, 32, 1.0, 0.75, 5e-7)
    assert (cfg.weight_decay, cfg.beta, cfg.clip_eps, cfg.loss_agg, cfg.epochs) == (
        0.01, 0.001, 0.2, "token_mean", 2)
    assert cfg.max_new_tokens == 1024 and cfg.shared_prefix


def test_evaluation_counts_unparseable_answers_as_wrong(tiny_dir):
    model, processor = vlm.load(str(tiny_dir))
    examples = presets.load_dataset("shapes")[:5]
    result = evaluation.evaluate(model, processor, examples, batch_size=2, max_new_tokens=3,
                                 progress=False)
    assert result.total == 5 and len(result.predictions) == 5
    assert result.correct == sum(p["prediction"] == e.answer
                                 for p, e in zip(result.predictions, examples))
    assert result.unparseable == sum(p["prediction"] is None for p in result.predictions)


def test_out_of_gpu_memory_ends_in_one_sentence_naming_the_flags(tmp_path, monkeypatch, capsys):
    def run_out_of_memory(cfg, out, log, procs, **kw):
        (out / "results.json").write_text('{"base": {}}')       # written before the failure
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(run, "run", run_out_of_memory)
    out = tmp_path / "run"
    assert cli.main(["--output-dir", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "out of GPU memory" in err and "--micro-batch" in err and "Traceback" not in err
    assert (out / "results.json").read_text() == '{"base": {}}'  # earlier results kept


def test_answer_entropy_before_and_after_is_measured_on_the_same_prompts(tmp_path, voter_dir):
    """At lr 0 the model does not change, so the vote entropy of the adaptation set must not
    either; the old measure (first batch vs last batch, other prompts) differed here."""
    cfg = config(voter_dir, lr=0.0, rollouts=16, num_samples=6, prompts_per_step=3)
    results = run.run(cfg, tmp_path / "run", log=lambda *a: None)
    before, after = results["base"]["answer_entropy"], results["adapted"]["answer_entropy"]
    assert before == after and before > 0
    assert results["trajectory"]["vote_entropy"] == [(0, before), (2, after)]
    assert results["base"]["accuracy"] == results["adapted"]["accuracy"]


def test_letter_forced_accuracy_agrees_with_greedy_where_greedy_answers_a_letter(tiny_dir,
                                                                                 tmp_path):
    """Two steered models (conftest.steer): one answers the letter A, one answers "xxxx" off
    format although its best letter is B. Where greedy answers a letter, the letter-forced
    accuracy is its accuracy; where it answers off format, greedy scores 0 and the letter-forced
    accuracy is what the model would have picked."""
    examples = presets.load_dataset("shapes")[:24]
    letters = {"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0}
    for letter, first in (("A", dict(letters, A=1.0)), ("B", dict(letters, B=1.0, x=2.0))):
        model, processor = vlm.load(str(steer(tiny_dir, tmp_path / letter, first,
                                              {"<|im_end|>": 0.0})))
        model.eval()
        greedy = evaluation.evaluate(model, processor, examples, batch_size=8, max_new_tokens=4,
                                     progress=False)
        forced = evaluation.letter_forced_accuracy(model, processor, examples, batch_size=8)
        share = sum(e.answer == letter for e in examples) / len(examples)
        assert forced == share and 0 < share < 1
        responses = {p["response"].strip() for p in greedy.predictions}
        if letter == "A":
            assert responses == {"A"} and greedy.accuracy == forced
        else:
            assert responses == {"xxxx"} and greedy.correct == 0 and greedy.unparseable == 24
    counting = [dataclasses.replace(examples[0], options=None)]
    assert evaluation.letter_forced_accuracy(model, processor, counting) is None


def test_evaluate_reads_the_letter_forced_accuracy_from_its_own_decode(tiny_dir):
    """The greedy decode keeps its first step's letter logits (no second forward); that must be
    the separate prompt forward's figure, per example too, with padding in the batch (random
    weights: their letter logits differ from question to question)."""
    model, processor = vlm.load(str(tiny_dir))
    model.eval()
    examples = presets.load_dataset("shapes")[:24]
    greedy = evaluation.evaluate(model, processor, examples, batch_size=8, max_new_tokens=8,
                                 progress=False)
    assert greedy.letter_forced == evaluation.letter_forced_accuracy(model, processor, examples,
                                                                     batch_size=8)
    for example, p in zip(examples, greedy.predictions):
        assert p["letter_forced"] == (evaluation.letter_forced_accuracy(
            model, processor, [example]) == 1.0)
    counting = [dataclasses.replace(examples[0], options=[], answer="3", kind="count")]
    assert evaluation.evaluate(model, processor, counting, max_new_tokens=2,
                               progress=False).letter_forced is None
