"""Shared fixtures: tiny models built offline once per test session."""

import pytest
import torch

from harness.tiny import build_tiny_model


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
