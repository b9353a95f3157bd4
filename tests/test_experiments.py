"""The paper's experiments as flags: each test would fail if its flag did nothing."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import data
from harness import presets
import grpo
import rollout
import shared_prefix
from harness import report, shapes
import ttrv
from harness.run import load_models, run
from harness.config import parse_args
import vlm
from harness import cli

SMALL = ["--num-samples", "4", "--rollouts", "4", "--prompts-per-step", "2", "--epochs", "1",
         "--eval-limit", "8", "--max-new-tokens", "3", "--quiet", "--no-save-model"]


def cfg_for(model_dir, *flags):
    cfg = parse_args(["--model", str(model_dir), *SMALL, *flags])
    return dataclasses.replace(cfg, device="cpu")


def fake_example(options=("cat", "dog", "eel", "fox")):
    return data.Example("x", "q", list(options), None, None, None)


def test_seeds_run_every_seed_and_report_mean_and_spread(tmp_path, tiny_dir):
    out = tmp_path / "run"
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--seeds", "0", "1",
                      "--output-dir", str(out)]) == 0
    assert (out / "seed-0" / "results.json").exists() and (out / "seed-1" / "results.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and len(summary["base"]) == 2
    assert "±" in (out / "results.md").read_text()
    configs = [json.loads((out / f"seed-{s}" / "config.json").read_text()) for s in (0, 1)]
    assert [c["seed"] for c in configs] == [0, 1]


def test_biased_sampling_adapts_on_only_k_classes(tmp_path, tiny_dir, monkeypatch):
    seen = []
    monkeypatch.setattr(ttrv, "adapt", lambda setup, examples, *a, **k: seen.extend(examples)
                        or [dict(answer_entropy=0.0, step=1)])
    cfg = cfg_for(tiny_dir, "--num-samples", "10", "--sampling", "biased", "--classes", "2")
    run(cfg, tmp_path, log=lambda *a: None)
    by_id = {e.id: e.label for e in presets.load_dataset("shapes")}
    assert len(seen) == 10 and all(e.label is None for e in seen)       # still unlabeled
    assert len({by_id[e.id] for e in seen}) == 2


def test_random_reward_ignores_the_answers():
    cfg = parse_args(["--reward", "random"])
    a, _, _ = ttrv.score(["A"] * 8, fake_example(), cfg, np.random.default_rng(3))
    b, _, _ = ttrv.score(["B", "C", "D", "A"] * 2, fake_example(), cfg, np.random.default_rng(3))
    assert np.array_equal(a, b) and set(a) <= {0.0, 1.0}


def test_the_batch_baseline_lets_alpha_change_the_advantages():
    """Under the per-group baseline alpha cancels (reading note); under the others it does not."""
    texts = [["A"] * 7 + ["B"], ["A", "B", "C", "D"] * 2]              # low vs high entropy
    for baseline, cancels in (("group", True), ("batch", False), ("none", False)):
        adv = []
        for alpha in ("0", "0.75"):
            cfg = parse_args(["--alpha", alpha, "--baseline", baseline])
            r = torch.tensor(np.stack([ttrv.score(t, fake_example(), cfg, None)[0] for t in texts]))
            adv.append(grpo.group_advantages(r, baseline=cfg.baseline))
        assert torch.allclose(adv[0], adv[1]) == cancels, baseline


def test_counting_questions_vote_on_numbers():
    cfg = parse_args(["--reward", "frequency"])
    count = data.Example("x", "How many?", [], None, None, None, kind="count")
    r, _, share = ttrv.score([r"\boxed{3}", "3", "there are 4", "3."], count, cfg, None)
    assert share == 0.75 and np.allclose(r, [0.75, 0.75, 0.25, 0.75])


def test_train_rollouts_trains_on_the_first_k_of_the_votes(tmp_path, tiny_dir, monkeypatch):
    rows = []
    real = ttrv.backward
    monkeypatch.setattr(ttrv, "backward", lambda s, g, *a: rows.append(g.ids.shape[0])
                        or real(s, g, *a))
    cfg = cfg_for(tiny_dir, "--votes", "6", "--train-rollouts", "2")
    setup, _ = load_models(cfg, log=lambda *a: None)
    ttrv.adapt(setup, presets.load_dataset("shapes")[:2], cfg)
    assert rows == [2, 2]


@pytest.mark.parametrize("agg", ["token_mean", "sequence_mean", "dr_grpo"])
def test_micro_batches_accumulate_the_same_gradient(tiny_dir, agg):
    cfg = cfg_for(tiny_dir, "--loss-agg", agg, "--beta", "0.1")
    setup, _ = load_models(cfg, log=lambda *a: None)
    policy, ref, processor = setup.policy, setup.ref_model, setup.processor
    one = vlm.split_inputs(vlm.prompt_inputs(processor, [presets.load_dataset("shapes")[0].image()],
                                             ["Which shape?"]))[0]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 300, (6, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1],
                         [1, 1, 0, 0]], dtype=torch.float32)
    old = -torch.rand(6, 4, generator=g) - 5
    adv = torch.randn(6, generator=g)
    with torch.no_grad():
        ref_logp = shared_prefix.logprobs(ref, one, ids, mask)
    group = rollout.Experience(one, ids, mask, old, ref_logp, adv)
    total = float(mask.sum()) if agg == "token_mean" else 6
    grads = []
    for micro in (None, 2):
        policy.zero_grad()
        ttrv.backward(setup, group, dataclasses.replace(cfg, micro_batch=micro), total, 1.0)
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_adapt_on_one_dataset_and_evaluate_on_another(tmp_path, tiny_dir):
    images = tmp_path / "imgs"
    images.mkdir()
    lines = []
    for i in range(3):
        shapes.draw_shape("circle", __import__("random").Random(i)).save(images / f"{i}.png")
        lines.append(json.dumps(dict(image=f"imgs/{i}.png", question="Which?",
                                     options=["circle", "star"], answer="A")))
    (tmp_path / "q.jsonl").write_text("\n".join(lines))
    out = tmp_path / "run"
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--adapt-dataset", "shapes",
                      "--eval-dataset", f"jsonl:{tmp_path / 'q.jsonl'}", "--output-dir", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["base"]["total"] == 3


def test_eval_every_records_the_figure_1_trajectory(tmp_path, tiny_dir):
    out = tmp_path / "run"
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--eval-every", "1", "--eval-subset", "4",
                      "--output-dir", str(out)]) == 0
    steps = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("eval_accuracy" in m for m in steps)
    trajectory = json.loads((out / "results.json").read_text())["trajectory"]
    assert [x for x, _ in trajectory["accuracy"]] == [0, 1, 2]
    assert [x for x, _ in trajectory["entropy"]] == [1, 2]


def test_paper_table_layout():
    summary = report.summarize([{"base": {"accuracy": .5}, "adapted": {"accuracy": .6}},
                                {"base": {"accuracy": .5}, "adapted": {"accuracy": .7}}])
    table = report.paper_table({"dtd": summary, "shapes": summary})
    assert table.splitlines()[0] == "|  | dtd | shapes |"
    assert "| TTRV | 65.00 ± 7.07 | 65.00 ± 7.07 |" in table
    assert "| delta | +15.00 ± 7.07 |" in table


def test_counting_questions_are_scored_by_one_minus_symmetric_percentage_error():
    import eval as evaluation
    example = data.Example("c", "How many?", [], "4", "4", None, kind="count")
    assert evaluation.score(r"so \boxed{4}", example) == dict(prediction=4.0, correct=1.0)
    assert evaluation.score("6 apples", example)["correct"] == 1 - 2 / 10
    assert evaluation.score("no idea", example) == dict(prediction=None, correct=0.0)


@pytest.mark.parametrize("reward", ["ttrv", "frequency", "diversity", "majority", "random", "dare"])
def test_every_reward_runs_through_the_loop(tiny_dir, reward):
    cfg = cfg_for(tiny_dir, "--reward", reward, "--num-samples", "2", "--lr", "1e-3")
    setup, _ = load_models(cfg, log=lambda *a: None)
    history = ttrv.adapt(setup, presets.load_dataset("shapes")[:2], cfg)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])


def test_flag_combinations_that_cannot_work_are_refused_up_front(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--sampling", "biased"])
    assert "--classes" in capsys.readouterr().err
    assert parse_args(["--reward", "dare", "--no-shared-prefix"]).reward == "dare"  # both record u


def test_eval_every_does_not_evaluate_the_final_model_twice(tmp_path, tiny_dir, monkeypatch):
    import eval as evaluation
    calls = []
    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "run"
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--eval-every", "1",
                      "--output-dir", str(out)]) == 0
    assert len(calls) == 3                               # base, after step 1, after step 2
    results = json.loads((out / "results.json").read_text())
    assert results["trajectory"]["accuracy"][-1] == [2, results["adapted"]["accuracy"]]
    assert (out / "predictions_adapted.jsonl").exists()


def test_official_protocol_samples_at_the_loaded_family_s_temperature(tmp_path, tiny_dir):
    """--protocol official leaves the temperature to the family: the tiny model is a Qwen2.5-VL,
    so the run samples (and records in config.json) at 1.5; an explicit flag still wins."""
    cfg = cfg_for(tiny_dir, "--protocol", "official", "--train-rollouts", "2")
    assert cfg.temperature is None
    run(cfg, tmp_path / "official")
    assert json.loads((tmp_path / "official" / "config.json").read_text())["temperature"] == 1.5
    cfg = cfg_for(tiny_dir, "--protocol", "official", "--train-rollouts", "2", "--temperature", "0.7")
    assert cfg.temperature == 0.7
