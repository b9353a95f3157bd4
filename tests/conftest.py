"""Shared fixtures: tiny models built offline once per test session; `shared_path`, the one way
tests find ../shared (the paper notes, the real checkpoints' files)."""

import os
from pathlib import Path

import os

import pytest
import torch

from harness import tiny
from harness.tiny import build_tiny_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"   # beside the repository


def shared_path(*parts) -> Path:
    """The path ../shared/<parts> beside the repository. When it is absent the calling test (or
    fixture) skips with a one-line reason, unless the environment variable CI is "true": there
    it fails, so CI cannot pass by skipping."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"{path} is absent (../shared beside the repository)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true needs it", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A random-weight tiny Qwen2.5-VL checkpoint directory (config, weights, processor)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2_5_vl"), arch="qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory):
    """The same, as a Qwen2-VL: a second architecture for the model-seam tests."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2_vl"), arch="qwen2_vl")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_internvl_dir(tmp_path_factory):
    """A random-weight tiny InternVL (-hf classes): 56x56 tiles, 4 image tokens per tile."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_internvl"), arch="internvl")


@pytest.fixture(scope="session")
def taught_dir(tmp_path_factory):
    """The taught tiny model, what `--model tiny` loads: built once per test run into the test
    cache ($TTRV_CACHE when set, as CI sets it; else a session directory). It samples parseable
    answers that disagree, so the loop's rewards differ within a group and it learns."""
    cache = os.environ.get("TTRV_CACHE") or tmp_path_factory.mktemp("cache")
    return tiny.tiny_model_path("tiny", cache_dir=cache, log=lambda *a: None)
