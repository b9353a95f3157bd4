"""Which method files one update reads: ttrv.adapt over one batch of prompts, from the first
rollout to optimizer.step(), traced with sys.setprofile on the tiny Qwen2.5-VL.

The files are the top-level modules (the method) whose functions run; the README's layout lists
them per sampler. The test fails when a file joins the path or leaves it, so the list stays true
and a change that sends the reader through one more file has to say so.
"""
import collections
import sys

import pytest

import ttrv
from harness import presets
from harness.config import parse_args
from harness.run import load_models
from test_structure import ROOT

COMMON = {"ttrv.py", "grpo.py", "rewards.py", "rollout.py", "answers.py", "vlm.py",
          "processes.py", "data.py"}
UPDATE_PATH = {"plain": COMMON, "shared": COMMON | {"shared_prefix.py"}}


def touched(s, examples, hp):
    """{method file: Counter of its functions that ran} over ttrv.adapt(s, examples, hp)."""
    calls = collections.defaultdict(collections.Counter)

    def profile(frame, event, arg):
        path = frame.f_code.co_filename
        if event == "call" and path.startswith(str(ROOT) + "/") and "/" not in path[len(str(ROOT)) + 1:]:
            calls[path[len(str(ROOT)) + 1:]][frame.f_code.co_name] += 1
    sys.setprofile(profile)
    try:
        ttrv.adapt(s, examples, hp)
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("sampler", ["shared", "plain"])
def test_one_update_reads_the_files_the_readme_lists(tiny_dir, sampler):
    flags = ["--model", str(tiny_dir), "--device", "cpu", "--rollouts", "4", "--epochs", "1",
             "--prompts-per-step", "2", "--max-new-tokens", "4", "--quiet"]
    cfg = parse_args(flags + ([] if sampler == "shared" else ["--no-shared-prefix"]))
    s, _ = load_models(cfg, log=lambda *a: None)
    calls = touched(s, presets.load_dataset("shapes")[:2], cfg)
    assert set(calls) == UPDATE_PATH[sampler], sorted(calls)
    assert calls["grpo.py"]["grpo_loss"] == 2 and calls["ttrv.py"]["update"] == 2  # 1 per prompt


def test_the_readme_names_each_sampler_s_update_path():
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("One update reads"))
    named = set(x.strip("`") for x in line.replace(",", " ").split() if x.endswith(".py`"))
    assert named == UPDATE_PATH["shared"], named
