"""tiny.py, tiny_teach.py, tiny_build.py: the same bytes on every CPU, two recipes, the cache's
faults."""

import errno
import hashlib
import os
from pathlib import Path

import pytest
import torch

from harness import config
from harness import tiny, tiny_build, tiny_clip, tiny_math, tiny_teach
from harness.tiny_build import CacheError


def reduced_builds(out):
    """Each tiny build at its smallest (random weights, two teaching steps), in one pinned child
    (tests/test_tiny.py runs it through tiny_build.run_pinned)."""
    tiny.build_tiny_model(f"{out}/tiny")
    tiny_teach.teach_shapes(f"{out}/tiny", steps=2, non_answer_share=0.5, log=print)
    tiny.build_tiny_model(f"{out}/internvl", arch="internvl")
    tiny_math.build_tiny_math(f"{out}/math")
    tiny_math.teach_tiny_math(f"{out}/math", steps=2, log=print)
    tiny_clip.build_tiny_clip(f"{out}/clip")
    tiny_clip.teach(f"{out}/clip", steps=2, images=40, batch_size=8, log=print)


def digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# What another CPU would compute, as far as one machine can show it: torch's kernels for another
# instruction set, MKL's other branch, oneDNN's other kernels, glibc's math without FMA, other
# thread counts. A build must not see any of them.
ELSEWHERE = [dict(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_CBWR="AUTO",
                  OMP_NUM_THREADS="2", GLIBC_TUNABLES=""),
             dict(ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="AVX512_CORE",
                  MKL_CBWR="COMPATIBLE", OMP_NUM_THREADS="1",
                  GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX2,-FMA")]


def test_the_tiny_builds_write_the_same_bytes_whatever_the_cpu(tmp_path, monkeypatch):
    """Each build started from a process that computes as another CPU would (ELSEWHERE) writes
    the same bytes: the child's pins (tiny_build.PINNED) override all of it."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))      # the child finds this file
    builds = []
    for i, env in enumerate(ELSEWHERE):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        tiny_build.run_pinned("test_tiny", "reduced_builds", [tmp_path / str(i)],
                              log=lambda *a: None)
        builds.append(digests(tmp_path / str(i)))
    assert {n for n in builds[0] if n.endswith("model.safetensors")} == {
        f"{m}/model.safetensors" for m in ("tiny", "internvl", "math", "clip")}
    assert builds[1] == builds[0]


def test_the_tiny_recipes_are_keyed_by_their_pinned_numerics(monkeypatch, tmp_path):
    """A build made without the pins (or under other ones) is never found as a pinned build."""
    paths = []
    for pins in (tiny_build.PINNED, dict(tiny_build.PINNED, ATEN_CPU_CAPABILITY="avx2")):
        monkeypatch.setattr(tiny, "PINNED", pins)
        monkeypatch.setattr(tiny, "cached", lambda path, *a, **k: path)
        paths.append(tiny.tiny_model_path("tiny", cache_dir=tmp_path))
    assert paths[0] != paths[1]


def test_both_tiny_models_get_the_tiny_presets_and_their_own_recipe():
    assert set(tiny_teach.RECIPES) == set(config.TINY_MODELS) - {"tiny-math"}   # the VLMs
    assert tiny_teach.RECIPES["tiny-letters"] == tiny_teach.TEACH               # the letters-only recipe
    assert tiny_teach.RECIPES["tiny"]["non_answer_share"] > tiny_teach.TEACH["non_answer_share"] == 0
    for name in tiny_teach.RECIPES:
        cfg = config.parse_args(["--model", name])
        assert (cfg.lr, cfg.max_new_tokens) == (config.TINY_PRESETS["lr"],
                                                config.TINY_PRESETS["max_new_tokens"])
    assert config.parse_args(["--model", "tiny-letters", "--lr", "3e-4"]).lr == 3e-4


# ------------------------------------------------------------------------------------ the cache
def fake_build(tmp):
    """A stand-in for a build: a config and a readable weights file."""
    from safetensors.torch import save_file
    (tmp / "config.json").write_text("{}")
    save_file({"w": torch.zeros(4)}, str(tmp / "model.safetensors"))


@pytest.mark.parametrize("name", ["tiny-math", "tiny-clip"])
def test_a_cut_short_tiny_math_or_clip_cache_is_said_and_rebuilt(tmp_path, monkeypatch, name):
    module = tiny_math if name == "tiny-math" else tiny_clip
    monkeypatch.setattr(module, "build_taught", lambda tmp, *a, log=None: fake_build(tmp))
    find = lambda log: (tiny_math.tiny_math_path(tmp_path, log) if name == "tiny-math"
                        else tiny_clip.tiny_clip_path(tmp_path, log))
    path = find(lambda *a: None)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    said = []
    assert find(said.append) == path and tiny_build.unreadable(path) is None
    assert said[0].startswith(f"the cached {'tiny-math model' if name == 'tiny-math' else 'tiny CLIP'}"
                              f" in {path} cannot be read") and said[0].endswith("rebuilding it")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]            # nothing left aside


def test_a_cut_short_config_or_tokenizer_is_unreadable(tmp_path):
    fake_build(tmp_path)
    assert tiny_build.unreadable(tmp_path) is None
    (tmp_path / "tokenizer.json").write_text('{"model": {"vocab"')
    assert "JSONDecodeError" in tiny_build.unreadable(tmp_path)


def test_a_cache_path_under_a_file_ends_in_one_sentence(tmp_path, capsys, monkeypatch):
    """TTRV_CACHE set to a file's path, or below one: `python ttrv.py` says which path and what
    to do, and ends its run failed (no traceback)."""
    from harness import cli
    (tmp_path / "file").write_text("")
    for cache in (tmp_path / "file", tmp_path / "file" / "cache"):
        monkeypatch.setenv("TTRV_CACHE", str(cache))
        out = tmp_path / f"run-{cache.name}"
        assert cli.main(["--output-dir", str(out), "--quiet", "--device", "cpu"]) == 1
        err = capsys.readouterr().err
        assert (f"error: the tiny models' cache directory {cache} cannot be made: "
                f"{tmp_path / 'file'} is a file; move that file or set TTRV_CACHE") in err
        assert "run failed; nothing was saved" in err and "Traceback" not in err
        assert len(err.splitlines()) == 2 and not out.exists()
    assert (tmp_path / "file").read_text() == ""


@pytest.mark.parametrize("number, said", [(errno.EROFS, "cannot be written (Read-only file system)"),
                                          (errno.EACCES, "cannot be written (Permission denied)"),
                                          (errno.ENOSPC, "is full (No space left on device)")])
def test_an_unwritable_or_full_cache_ends_in_one_sentence(tmp_path, monkeypatch, number, said):
    """Tests run as root, whom chmod does not stop: the OSError is raised where the cache
    directory is first written."""
    def refuse(prefix, dir):
        raise OSError(number, os.strerror(number), dir)
    monkeypatch.setattr(tiny_build.tempfile, "mkdtemp", refuse)
    with pytest.raises(CacheError) as caught:
        tiny_build.build_cached(tmp_path / "cache" / "tiny-x", fake_build)
    message = str(caught.value)
    assert f"cache directory {tmp_path / 'cache'}" in message and said in message
    assert "TTRV_CACHE" in message and message.endswith(".") and "\n" not in message


def disk_full(out):
    """A build whose save finds the disk full, as safetensors says it (its own error type)."""
    from safetensors import SafetensorError
    (Path(out) / "config.json").write_text("{}")
    print("saving the weights")
    raise SafetensorError("Error while serializing: I/O error: No space left on device "
                          "(os error 28)")


def test_a_disk_that_fills_during_a_pinned_build_ends_in_one_sentence(tmp_path, monkeypatch):
    """The child's I/O error reaches the parent with its errno; nothing is left in the cache."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))      # the child finds this file
    cache, said = tmp_path / "cache", []
    with pytest.raises(CacheError, match=f"the disk holding the tiny models' cache directory "
                                         f"{cache} is full"):
        tiny_build.build_cached(cache / "tiny-x", lambda tmp: tiny_build.run_pinned(
            "test_tiny", "disk_full", [tmp], log=said.append))
    assert said == ["saving the weights"] and list(cache.iterdir()) == []
    with pytest.raises(RuntimeError, match="(?s)failed.*AttributeError"):   # a bug: its traceback
        tiny_build.run_pinned("test_tiny", "no_such_build", [tmp_path], log=said.append)


def test_an_empty_ttrv_cache_is_unset(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TTRV_CACHE", "")
    assert tiny_build.default_cache_dir() == tmp_path / ".cache" / "ttrv"
    monkeypatch.setenv("TTRV_CACHE", str(tmp_path / "c"))
    assert tiny_build.default_cache_dir() == tmp_path / "c"
