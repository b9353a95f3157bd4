"""Two processes (torchrun, gloo, FSDP2 on the CPU) against one process.

Compared: (1) one update on fixed rollouts (tests/dist_worker.py): two prompts' groups, one per
rank, vs both in one process with prompts_per_update = 2: the full gradients before the AdamW
step, every parameter after it, and the gradient norm; (2) ttrv.py end to end with 2 processes
writes the same files as with one. Multi-GPU NCCL is not tested (no GPU here).
"""
import json
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


def test_two_processes_make_the_single_process_update(tiny_dir, tmp_path):
    worker = str(ROOT / "tests" / "dist_worker.py")
    run([sys.executable, worker, str(tiny_dir), str(tmp_path / "one.pt")], tmp_path)
    run(TORCHRUN + [worker, str(tiny_dir), str(tmp_path / "two.pt")], tmp_path)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 10
    for name, g in one["grads"].items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(two["grads"][name], g, rtol=1e-4, atol=1e-7, msg=name)
    for name, w in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-5, atol=1e-6, msg=name)
    assert two["stats"]["grad_norm"] == pytest.approx(one["stats"]["grad_norm"], rel=1e-4)


def test_torchrun_end_to_end_writes_the_same_files(tiny_dir, tmp_path):
    args = ["ttrv.py", "--model", str(tiny_dir), "--lr", "1e-4", "--num-samples", "4",
            "--rollouts", "8", "--epochs", "1", "--max-new-tokens", "4", "--eval-limit", "6",
            "--eval-batch-size", "4", "--quiet"]
    run([sys.executable] + args + ["--output-dir", str(tmp_path / "one")], tmp_path)
    run(TORCHRUN + args + ["--output-dir", str(tmp_path / "two")], tmp_path)
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*"))
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert "model/model.safetensors" in files(tmp_path / "two")
    lines = (tmp_path / "two" / "predictions_base.jsonl").read_text().splitlines()
    assert len(lines) == 6                        # both ranks' shares, padding dropped


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
