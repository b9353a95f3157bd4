"""bench.py runs end to end on the tiny model and prints every phase with a ratio.

Timing values are never asserted: the speed goals are read off the script's printed figures.
"""
import re

import pytest
import torch

from harness import bench
from conftest import shared_path
from harness import bench_models


def test_bench_tiny_prints_every_phase_with_a_ratio(tiny_dir, capsys):
    threads = torch.get_num_threads()
    argv = ["--tiny-dir", str(tiny_dir), "--rollouts", "4", "--prompts", "2", "--repeats", "1",
            "--response-len", "2", "--eval-images", "4", "--eval-batch", "2"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert torch.get_num_threads() == threads            # the thread count is put back
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines() if "  " in line}
    ratio = re.compile(r"\d+\.\d\dx\s*$")
    for phase in ["sampling", "reference log-probs",
                  "policy forward+backward", "AdamW step", "full step (sum)",
                  "eval greedy decode, img/s"]:
        assert phase in rows, f"missing row {phase!r} in:\n{out}"
        assert ratio.search(rows[phase]), f"no ratio in {rows[phase]!r}"
    assert "eval preprocessing (CPU), img/s" in rows and "peak RSS, whole process (GB)" in rows
    assert "PROJECTION from the measured phases" in out and "GOALS:" in out
    assert "response 2 tokens (forced)" in out


def test_bench_markdown_table(tiny_dir, capsys):
    argv = ["--tiny-dir", str(tiny_dir), "--rollouts", "2", "--prompts", "1", "--repeats", "1",
            "--response-len", "1", "--eval-images", "2", "--eval-batch", "2", "--markdown"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "| phase (ms per step) | shared-prefix | plain | plain/shared |" in out
    assert re.search(r"\| full step \(sum\) \| [\d.]+ \| [\d.]+ \| [\d.]+x \|", out)


def test_bench_counts_the_internvl_architectures_on_the_meta_device(capsys):
    assert shared_path("fixtures").resolve() == bench_models.FIXTURES.resolve()   # bench reads them
    assert bench.main(["--arch", "internvl3-2b", "--device", "meta"]) == 0
    assert bench.main(["--arch", "internvl3-8b", "--device", "meta"]) == 0
    out = capsys.readouterr().out
    assert "internvl3-2b architecture (meta device)" in out and "internvl3-8b" in out
    with pytest.raises(SystemExit) as exit:            # a bad flag: exit 2, as ttrv.py's
        bench.main(["--arch", "internvl3-8b", "--device", "cpu"])
    assert exit.value.code == 2 and "meta device only" in capsys.readouterr().err


def test_bench_resisc_prompt_from_the_real_qwen_files_is_166_to_172_tokens():
    shared_path("fixtures", "qwen2.5-vl-3b-instruct")
    _, inputs = bench_models.real_prompts("qwen2.5-vl-3b-instruct", 45)
    lengths = inputs["attention_mask"].sum(1)
    assert 166 <= lengths.min() and lengths.max() <= 172


def test_bench_logprob_memory_table(capsys):
    assert bench.main(["--logprob-memory", "--logprob-lens", "8", "--logprob-rows", "1"]) == 0
    out = capsys.readouterr().out
    assert "vocabulary 151,936" in out and "chunked peak (GB)" in out
    assert re.search(r"^\s+8\s+0\.00\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", out, re.M), out
