"""`python bench.py --gpu-check --dry-run`: the GPU check's own code on the tiny models, CPU, so it
does not rot before a GPU runs it. Values are never asserted (no timings in tests)."""

import json
import math

import pytest
import torch

from harness import bench
from harness import gpu_check


def test_the_gpu_check_dry_run_measures_every_row_and_writes_its_json(tmp_path, capsys):
    path = tmp_path / "check.json"
    assert bench.main(["--gpu-check", "--dry-run", "--gpu-check-json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["dry_run"] is True and result["device"] == "cpu"
    assert set(result["rows"]) == {key for key, _, _ in gpu_check.ROWS}
    assert all(math.isfinite(v) and v > 0 for v in result["rows"].values())
    out = capsys.readouterr().out
    assert "| what | measured | goal |" in out and out.count("\n| ") == len(gpu_check.ROWS) + 1
    assert result["table"] in out


def test_the_gpu_check_needs_a_gpu_unless_dry_run(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--gpu-check"]) == 1
    assert "--dry-run" in capsys.readouterr().err


@pytest.mark.skipif(not gpu_check.FIXTURES.is_dir(), reason="../shared/fixtures is absent")
def test_the_gpu_check_builds_the_real_architectures_at_full_size(monkeypatch):
    """On the meta device (nothing allocated): the 3B and InternVL3-2B the check would train."""
    model, processor = gpu_check.real_model(gpu_check.QWEN, "meta")
    assert sum(p.numel() for p in model.parameters()) == 3_754_622_976    # as published
    assert processor.tokenizer.padding_side == "left"
    model, _ = gpu_check.real_model(gpu_check.INTERNVL, "meta")
    assert type(model).__name__ == "InternVLForConditionalGeneration"
