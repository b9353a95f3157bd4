"""Two processes (torchrun, gloo, FSDP2 on the CPU) against one process.

Compared, each run once per module (a torchrun launch costs tens of seconds):
(1) tests/dist_worker.py, alone and under torchrun: one update on fixed rollouts, two prompts'
groups, one per rank, vs both in one process with prompts_per_update = 2 (the full gradients
before the AdamW step, every parameter after it, the loss statistics); and ttrv.adapt on an odd
prompt count (3 per step, then 1) with fixed rollouts, where rank 1 holds zero-weight stand-ins:
the same metrics and the same weights as one process. (2) ttrv.py end to end on a tiny
model, which learns, with 1 and 2 processes: what must be equal is compared by content.
Multi-GPU NCCL is not tested (no GPU here).
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def run(cmd, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               TTRV_CACHE=os.environ.get("TTRV_CACHE", str(tmp_path / "cache")))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


@pytest.fixture(scope="module")
def worker_runs(tiny_dir, tmp_path_factory):
    """dist_worker.py's results: one process (rank 0) and two processes (rank 0 and rank 1)."""
    tmp, worker = tmp_path_factory.mktemp("worker"), str(ROOT / "tests" / "dist_worker.py")
    run([sys.executable, worker, str(tiny_dir), str(tmp / "one")], tmp)
    run(TORCHRUN + [worker, str(tiny_dir), str(tmp / "two")], tmp)
    return (torch.load(tmp / "one.rank0.pt"),
            [torch.load(tmp / f"two.rank{r}.pt") for r in (0, 1)])


def test_two_processes_make_the_single_process_update(worker_runs):
    one, twos = worker_runs[0]["one_update"], [w["one_update"] for w in worker_runs[1]]
    two = twos[0]
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 10
    for name, g in one["grads"].items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(two["grads"][name], g, rtol=1e-4, atol=1e-7, msg=name)
    for name, w in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-5, atol=1e-6, msg=name)
    for two in twos:             # the loss statistics: over both ranks' groups, on every rank
        assert two["stats"].keys() == one["stats"].keys()
        for key, value in one["stats"].items():
            assert two["stats"][key] == pytest.approx(value, rel=1e-4, abs=1e-7), key


def test_an_odd_prompt_count_gives_the_single_process_metrics_and_update(worker_runs, tiny_dir):
    """3 prompts per step, then 1, over 2 processes: rank 1 has a stand-in in step 1's second
    update and nothing real in step 2. The metrics are sums and counts over the ranks, so
    they equal one process's (a mean of the ranks' means is NaN in step 2 and biased in step 1)."""
    one = worker_runs[0]["adapt_with_stand_ins"]
    twos = [w["adapt_with_stand_ins"] for w in worker_runs[1]]
    assert [m["updates"] for m in one["history"]] == [2, 3]
    # the fixed completions: prompt 3's four-way tie (in step 1) gives A = 0, the others do not
    assert all(0 < m["adv_abs"] for m in one["history"])
    assert sorted(m["adv_nonzero_share"] for m in one["history"]) == [pytest.approx(2 / 3), 1.0]
    import vlm
    initial = dict(vlm.load_model(str(tiny_dir), "cpu", torch.float32).named_parameters())
    assert any(not torch.equal(w, initial[k]) for k, w in one["weights"].items())  # decay is 0
    for two in twos:
        assert [(m["step"], k) for m in two["history"] for k, v in m.items()
                if not math.isfinite(v)] == []
        for m1, m2 in zip(one["history"], two["history"], strict=True):
            assert m1.keys() == m2.keys()
            for key in sorted(m1.keys() - {"seconds"}):
                assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-7), (m2["step"], key)
        for name, w in one["weights"].items():
            torch.testing.assert_close(two["weights"][name], w, rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def cli_runs(voter_dir, tmp_path_factory):
    """ttrv.py on the voter (conftest: its samples disagree) with 1 and 2 processes: 4
    adaptation prompts, 3 per step (steps of 3 and 1: rank 1 holds stand-ins), 2 prompts per
    update in both, weight decay 0, 8 test questions evaluated one per batch (the same greedy
    computation per question, however the ranks split them)."""
    tmp = tmp_path_factory.mktemp("cli")
    args = ["ttrv.py", "--model", str(voter_dir), "--lr", "1e-3", "--num-samples", "4",
            "--prompts-per-step", "3", "--rollouts", "8", "--epochs", "1",
            "--max-new-tokens", "4", "--eval-limit", "8", "--eval-batch-size", "1",
            "--prompts-per-update", "2", "--weight-decay", "0", "--quiet"]
    run([sys.executable] + args + ["--output-dir", str(tmp / "one")], tmp)
    run(TORCHRUN + args + ["--output-dir", str(tmp / "two")], tmp)
    return tmp / "one", tmp / "two"


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_torchrun_end_to_end_writes_the_same_files(cli_runs):
    one, two = cli_runs
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*"))
    assert files(two) == files(one)
    assert "model/model.safetensors" in files(two)


def test_torchrun_base_evaluation_equals_one_process(cli_runs):
    """Greedy decoding of the same model: the base predictions and results must be equal, in
    the test set's order (both ranks' shares gathered, padding dropped); so must the vote
    entropy before adapting, which every rank samples on all prompts from the run seed."""
    one, two = cli_runs
    base = [lines(d / "predictions_base.jsonl") for d in cli_runs]
    assert len(base[0]) == 8 and base[1] == base[0]
    results = [json.loads((d / "results.json").read_text()) for d in cli_runs]
    assert results[1]["base"] == results[0]["base"]


def test_torchrun_adapts_on_both_and_writes_predictions_in_the_same_order(cli_runs, voter_dir):
    """Under torchrun each rank samples its own prompts from its own seed (run seed + rank), so
    the rollouts, the updates and the adapted answers need not equal one process's: compared are
    that both runs learned (advantages not 0, finite metrics, weights moved with weight decay 0)
    and that the adapted predictions cover the same questions in the same order."""
    import vlm
    taught = vlm.load_model(str(voter_dir), "cpu", torch.float32).state_dict()
    for d in cli_runs:
        steps = lines(d / "metrics.jsonl")
        assert [m["updates"] for m in steps] == [2, 3]
        assert all(math.isfinite(v) for m in steps for v in m.values())   # step 2: stand-ins
        assert all(m["adv_abs"] > 0 and m["grad_norm"] > 0 for m in steps)
        adapted = vlm.load_model(str(d / "model"), "cpu", torch.float32).state_dict()
        assert any(not torch.equal(taught[k], adapted[k]) for k in taught)
    one, two = ([p["id"] for p in lines(d / "predictions_adapted.jsonl")] for d in cli_runs)
    assert one == two == [p["id"] for p in lines(cli_runs[0] / "predictions_base.jsonl")]


def test_sampling_gathers_each_block_once_per_rollout_not_per_token(tiny_dir, tmp_path):
    """FSDP2 reshards a block after each forward, so a decode loop re-gathers the whole model
    at every generated token; procs.gathered keeps the blocks gathered for the rollout: the
    same tokens, one all-gather per FSDP parameter group, every parameter sharded again after."""
    worker = str(ROOT / "tests" / "dist_sample_worker.py")
    run(TORCHRUN + [worker, str(tiny_dir), str(tmp_path / "s.pt")], tmp_path)
    r = torch.load(tmp_path / "s.pt")
    assert torch.equal(r["gathered"]["ids"], r["per_forward"]["ids"])
    assert r["gathered"]["ids"].shape[1] >= 3                    # several decode steps
    assert r["gathered"]["gathers"] <= r["groups"] < r["per_forward"]["gathers"]
    assert r["gathered_sharded_after"] and r["per_forward_sharded_after"]


@pytest.mark.parametrize("fault, says", [
    ("data", "rank 1: Cannot read image x.png; replace it."),
    ("model", "rank 1: RuntimeError: planted fault in the model step"),
])
def test_an_error_on_one_rank_ends_every_rank_with_that_error(fault, says, tiny_dir, tmp_path):
    """Rank 1 fails alone (its prompts, or in the middle of a step while rank 0 waits in a
    collective); both processes end, rank 0 says rank 1's error in one line and marks it."""
    out = tmp_path / "run"
    args = ["--model", str(tiny_dir), "--num-samples", "2", "--rollouts", "3",
            "--prompts-per-step", "2", "--epochs", "1", "--eval-limit", "4", "--max-new-tokens",
            "2", "--eval-batch-size", "4", "--quiet", "--output-dir", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", FAULT=fault,
               TTRV_CACHE=os.environ.get("TTRV_CACHE", str(tmp_path / "cache")))
    done = subprocess.run(TORCHRUN + [str(ROOT / "tests" / "dist_cli_worker.py"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    # torchrun's summary lists every failed process: both ended non-zero (1; or -15 when
    # torchrun's SIGTERM, sent once the first exits, reaches one already shutting down)
    ended = dict(re.findall(r"rank\s*: (\d) \(local_rank.*\n\s*exitcode\s*: (-?\d+)",
                            done.stderr))
    assert set(ended) == {"0", "1"} and "0" not in ended.values(), done.stderr[-3000:]
    rank0 = [line for line in done.stderr.splitlines() if line.startswith(("error:", "run failed"))]
    assert rank0[:1] == [f"error: {says}"], done.stderr[-3000:]
    assert rank0[1].startswith("run failed; marked failed in")
    assert "[rank0]: Traceback" not in done.stderr                # rank 0 ends in its sentence
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == says
