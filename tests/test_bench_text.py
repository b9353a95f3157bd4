"""bench.py --text-sampler runs end to end (tiny shapes) and prints both tables with ratios.
Timing values are never asserted: the goals are read off the printed figures."""
import re

import torch

from harness import bench
from harness import bench_text


def test_text_sampler_tables(monkeypatch, capsys):
    monkeypatch.setattr(bench_text, "SAMPLER_SHAPE", (4, 6))
    monkeypatch.setattr(bench_text, "ROLLOUTS", [2, 3])
    monkeypatch.setattr(bench_text, "LENGTHS", [2, 5])
    threads = torch.get_num_threads()
    assert bench.main(["--text-sampler", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert torch.get_num_threads() == threads
    assert "Sampler tokens/s, 4 rollouts x 6 tokens" in out and "torch threads" in out
    for name in ("shared-prefix sampler", "generate", "plain sampler"):
        row = re.search(rf"^\| {name} \| ([\d,]+) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+) \| (\d+) \|$",
                        out, re.M)
        assert row, f"no row for {name} in:\n{out}"
    assert re.search(r"^\| generate \| [\d,]+ \| 1\.00 \| [\d,]+ \| 1\.00 \| \d+ \|$", out, re.M)
    assert "| N \\ T | 2 | 5 |" in out
    assert re.search(r"^\| 3 \| [\d.]+ / [\d.]+ \([\d.]+x\) \| [\d.]+ / [\d.]+ \([\d.]+x\) \|$",
                     out, re.M), out
