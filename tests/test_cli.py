"""Errors a user can cause on the command line (issues 11 and 17): each ends in one sentence,
with the right exit code and no traceback, before any data or model is loaded where it can; a run
never merges into an old one, and a failed or interrupted (Ctrl-C, SIGTERM) run says so in its
directory.

Most tests call ttrv.main in-process with the loaders replaced by ones that fail the test, so a
check that came too late shows up as "loaded". docs/errors.md lists these.
"""

import errno
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import data
from harness import presets
import eval as evaluation
from harness import models
import ttrv
import vlm
from harness import cli, config, eval_cli, math_data, run

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--num-samples", "2", "--rollouts", "3", "--prompts-per-step", "2", "--epochs", "1",
         "--eval-limit", "4", "--max-new-tokens", "2", "--eval-batch-size", "4"]


@pytest.fixture
def nothing_loads(monkeypatch):
    """Data and model loaders that fail the test: the error must come before them."""
    def loaded(*a, **k):
        raise AssertionError("data or model was loaded before the error")
    monkeypatch.setattr(presets, "load_dataset", loaded)
    monkeypatch.setattr(run, "load_models", loaded)


def ends_before_loading(argv, capsys, code):
    """Run cli.main(argv); return stderr after checking the exit code and one clean sentence."""
    try:
        result = cli.main(argv)
    except SystemExit as e:         # parse_args ends bad settings the argparse way (exit 2)
        result = e.code
    err = capsys.readouterr().err
    assert result == code, err
    assert "Traceback" not in err and err.count("error:") == 1
    return err


@pytest.mark.parametrize("argv, says", [
    (["--rollouts", "0"], "--rollouts 0 is out of range"),
    (["--lr", "-1"], "--lr -1.0 is out of range; pass a number > 0"),
    (["--epochs", "0"], "--epochs 0 is out of range"),
    (["--prompts-per-step", "0"], "--prompts-per-step 0 is out of range"),
    (["--train-rollouts", "10", "--rollouts", "4"], "pass K <= N"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0 is out of range"),
    (["--top-p", "1.5"], "--top-p 1.5 is out of range"),
    (["--micro-batch", "0"], "--micro-batch 0 is out of range"),
    (["--seeds", "1", "1"], "repeats a seed"),
])
def test_a_setting_out_of_range_ends_in_one_sentence_before_loading(argv, says, tmp_path,
                                                                    capsys, nothing_loads):
    out = tmp_path / "run"
    err = ends_before_loading(argv + ["--output-dir", str(out)], capsys, code=2)
    assert says in err and not out.exists()


@pytest.mark.parametrize("argv, says", [
    (["--device", "foo"], "invalid choice: 'foo'"),
    (["--device", "cuda"], "torch sees no CUDA GPU"),
])
def test_a_device_that_does_not_exist_ends_before_loading(argv, says, tmp_path, capsys,
                                                          monkeypatch, nothing_loads):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # a machine without CUDA
    err = ends_before_loading(argv + ["--output-dir", str(tmp_path / "run")], capsys, code=2)
    assert says in err


def test_an_output_dir_that_is_a_file_ends_before_loading(tmp_path, capsys, nothing_loads):
    (tmp_path / "f").write_text("mine")
    err = ends_before_loading(["--output-dir", str(tmp_path / "f")], capsys, code=1)
    assert "is a file" in err and (tmp_path / "f").read_text() == "mine"
    err = ends_before_loading(["--output-dir", str(tmp_path / "f" / "run")], capsys, code=1)
    assert "cannot write to" in err


def test_a_directory_that_refuses_writes_ends_before_loading(tmp_path, capsys, nothing_loads,
                                                            monkeypatch):
    """An existing empty directory the OS will not write into (read-only to a user; root ignores
    the permission bits, so the refusal is made here, at every write into it)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = Path.write_text

    def refuse(path, *a, **k):
        if locked in path.parents:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *a, **k)
    monkeypatch.setattr(Path, "write_text", refuse)
    err = ends_before_loading(["--output-dir", str(locked)], capsys, code=1)
    assert f"cannot write to {locked} (Permission denied)" in err and not any(locked.iterdir())


@pytest.mark.parametrize("argv, says", [
    (["--rollouts", "1"], "group advantage of 0"),
    (["--rollouts", "8", "--train-rollouts", "1"], "group advantage of 0"),
    (["--temperature", "0"], "every advantage is 0"),
])
def test_settings_that_would_learn_nothing_are_refused(argv, says, tmp_path, capsys,
                                                      nothing_loads):
    err = ends_before_loading(argv + ["--output-dir", str(tmp_path / "run")], capsys, code=2)
    assert says in err


def test_one_rollout_is_allowed_where_it_can_learn():
    """With --baseline none (or batch) one response's reward is its advantage."""
    assert config.parse_args(["--rollouts", "1", "--baseline", "none"]).rollouts == 1


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_eval_limit_below_one_is_refused(limit, tmp_path, capsys, nothing_loads):
    err = ends_before_loading(["--eval-limit", limit, "--output-dir", str(tmp_path / "r")],
                              capsys, code=2)
    assert f"--eval-limit {limit} is out of range" in err


def test_eval_given_a_run_directory_evaluates_its_model(tmp_path, tiny_dir, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text('{"status": "complete"}')
    (run / "model").symlink_to(tiny_dir)
    args = ["--model", str(run), "--limit", "2", "--max-new-tokens", "2", "--device", "cpu"]
    assert eval_cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"evaluating its saved model {run / 'model'}" in out and "accuracy" in out
    (run / "model").unlink()                                        # --no-save-model
    assert eval_cli.main(args) == 1
    err = capsys.readouterr().err
    assert "run directory without a saved model" in err and "Traceback" not in err


def test_overwrite_moves_the_old_run_aside_before_writing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    for name in ("config.json", "results.md", "summary.json", "model/model.safetensors"):
        (out / name).write_text("old")

    def new_run(cfg, out_, log, procs, **kw):
        assert list(out_.iterdir()) == [out_ / "status.json"]     # nothing of the old run
        raise data.DataError("stop here.")
    monkeypatch.setattr(run, "run", new_run)
    assert cli.main(["--output-dir", str(out), "--overwrite", "--quiet"]) == 1
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and (aside[0] / "model" / "model.safetensors").read_text() == "old"
    assert sorted(p.name for p in aside[0].iterdir()) == [
        "config.json", "model", "results.md", "summary.json"]


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, capsys, nothing_loads):
    (tmp_path / "notes.txt").write_text("mine")
    err = ends_before_loading(["--output-dir", str(tmp_path), "--overwrite"], capsys, code=1)
    assert "not a ttrv run directory" in err and (tmp_path / "notes.txt").exists()


def test_ctrl_c_during_adaptation_ends_in_one_line_and_marks_the_run(tmp_path, tiny_dir,
                                                                     capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(ttrv, "adapt", interrupted)
    out = tmp_path / "run"
    code = cli.main(["--model", str(tiny_dir), *SMALL, "--device", "cpu", "--quiet",
                      "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("interrupted;")
    assert "predictions_base.jsonl" in err and "config.json" in err and "metrics.jsonl (0 steps)" in err
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "interrupted" and "predictions_base.jsonl" in status["saved"]


def test_a_failed_run_is_marked_or_removed(tmp_path, tiny_dir, capsys, monkeypatch):
    out = tmp_path / "early"                      # fails before anything is saved: removed
    assert cli.main(["--dataset", "nope", "--quiet", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "nothing was saved" in err and "Traceback" not in err and not out.exists()

    def fails_mid_run(*a, **k):
        raise data.DataError("corrupt image x.png; replace it.")
    monkeypatch.setattr(ttrv, "adapt", fails_mid_run)
    out = tmp_path / "late"                       # fails after the base evaluation: marked
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--device", "cpu", "--quiet",
                      "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "error: corrupt image x.png; replace it."
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("corrupt image")


def test_a_hub_id_without_network_fails_fast_and_quietly(monkeypatch, capsys):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)      # restored after the test
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # nothing listens on port 9
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY",
                  "http_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    assert models.work_offline_if_hub_unreachable(log=print)
    assert constants.HF_HUB_OFFLINE and "cannot be reached" in capsys.readouterr().out
    with pytest.raises(vlm.ModelError, match="Could not fetch"):
        vlm.load_model("Qwen/no-such-model", "cpu", torch.float32)
    assert "Retry" not in capsys.readouterr().err


def test_a_whole_run_prints_short_step_lines_the_results_once_and_saves_in_bf16(
        tmp_path, tiny_dir, capsys):
    out = tmp_path / "run"
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--device", "cpu", "--reward", "majority",
                      "--save-dtype", "bf16", "--output-dir", str(out)]) == 0
    captured = capsys.readouterr()
    steps = [line for line in captured.out.splitlines() if line.startswith("step ")]
    assert len(steps) == 1 and len(steps[0]) < 120 and "reward" in steps[0]
    assert captured.out.count("delta") == 1                        # the results, once
    assert "Loading weights" not in captured.err and "Writing model" not in captured.err
    assert "| adapted (majority reward) |" in (out / "results.md").read_text()
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    from safetensors import safe_open
    with safe_open(str(next((out / "model").glob("*.safetensors"))), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16


def test_help_is_fast_imports_no_torch_and_shows_the_tiny_presets():
    script = ("import runpy, sys\nsys.argv = ['ttrv.py', '--help']\ntry:\n"
              f"    runpy.run_path({str(ROOT / 'ttrv.py')!r}, run_name='__main__')\n"
              "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=dict(os.environ, COLUMNS="200"))
    assert "torch imported: False" in proc.stdout
    assert "(default: 5e-07; 0.0001 for --model tiny)" in proc.stdout
    assert "(default: None)" not in proc.stdout
    assert all(line.count("default") <= 1 for line in proc.stdout.splitlines())


# ------------------------------------------------------------------------------- issue 17's faults

FLOAT_FIELDS = [f.name for f in dataclasses.fields(config.Config) if f.type is float]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_a_number_that_is_not_finite_is_refused_at_parse(name, tmp_path, capsys, nothing_loads):
    """inf passes every "> 0" range check and nan fails them with a confusing sentence; both are
    refused by name, for every float setting."""
    for value in ("inf", "nan"):
        err = ends_before_loading([config.flag(name), value, "--output-dir", str(tmp_path / "r")],
                                  capsys, code=2)
        assert f"{config.flag(name)} {value} is not a finite number; pass " in err
    assert not (tmp_path / "r").exists()


@pytest.fixture
def eval_loads_nothing(monkeypatch):
    def loaded(*a, **k):
        raise AssertionError("data or model was loaded before the error")
    monkeypatch.setattr(presets, "load_dataset", loaded)
    monkeypatch.setattr(models, "load", loaded)


def eval_ends(argv, capsys, code):
    try:
        result = eval_cli.main(argv)
    except SystemExit as e:
        result = e.code
    err = capsys.readouterr().err
    assert result == code, err
    assert "Traceback" not in err and err.count("error:") == 1
    return err


def test_eval_refuses_bad_numbers_at_parse(capsys, eval_loads_nothing):
    assert "--eval-limit 0 is out of range" in eval_ends(["--model", "x", "--limit", "0"],
                                                         capsys, code=2)
    assert "--num-workers -1 is out of range" in eval_ends(
        ["--model", "x", "--num-workers", "-1"], capsys, code=2)


@pytest.mark.parametrize("make, says", [
    (lambda d: (d / "weights.bin").write_text("x"), "holds no config.json"),
    (lambda d: (d / "config.json").write_text('{"lr": 1e-4}'), "has no model_type"),
    (lambda d: ((d / "config.json").write_text('{"lr": 1e-4}'),
                (d / "status.json").write_text('{"status": "complete"}')),
     "is a ttrv run directory, not a model; pass its saved model"),
    (lambda d: (d / "config.json").write_text('{"model_ty'), "cannot be read as a model config"),
])
def test_a_model_directory_without_a_usable_config_ends_in_one_sentence(make, says, tmp_path,
                                                                       capsys, nothing_loads,
                                                                       eval_loads_nothing):
    model = tmp_path / "model"
    model.mkdir()
    make(model)
    out = tmp_path / "run"
    err = ends_before_loading(["--model", str(model), "--output-dir", str(out)], capsys, code=1)
    assert says in err and not out.exists()                   # no run directory either
    if "run directory" not in says:                           # eval.py uses a run's model/
        assert says in eval_ends(["--model", str(model)], capsys, code=1)


def test_a_model_path_that_does_not_exist_ends_before_loading(tmp_path, capsys, nothing_loads,
                                                              eval_loads_nothing):
    missing = str(tmp_path / "no-such-model")
    err = ends_before_loading(["--model", missing, "--output-dir", str(tmp_path / "r")], capsys, 1)
    assert f"--model {missing} does not exist" in err
    assert "does not exist" in eval_ends(["--model", missing], capsys, code=1)


def test_unreadable_weights_end_in_one_sentence(tmp_path, tiny_dir, capsys):
    """A truncated model.safetensors in a user's model directory (an interrupted download)."""
    import shutil
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    err = eval_ends(["--model", str(model), "--limit", "1", "--device", "cpu"], capsys, code=1)
    assert "cannot be read" in err and "download the model again" in err


def test_a_corrupt_cached_tiny_model_is_rebuilt(tmp_path, capsys, monkeypatch, tiny_dir):
    """A cache entry whose weights were cut short is noticed, said, and rebuilt; eval.py --model
    tiny then loads the rebuilt model. (The build is a copy of the random-weight tiny model to
    keep the test fast: the cache is what is under test, not the taught weights.)"""
    import shutil

    from harness import tiny
    monkeypatch.setenv("TTRV_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tiny, "build_taught", lambda path, name, log=None: shutil.copytree(
        tiny_dir, path, dirs_exist_ok=True))
    path = tiny.tiny_model_path("tiny", log=lambda *a: None)
    weights = path / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    assert tiny.unreadable(path) is not None
    args = ["--model", "tiny", "--limit", "1", "--max-new-tokens", "1", "--device", "cpu"]
    assert eval_cli.main(args) == 0
    captured = capsys.readouterr()
    assert f"the cached tiny model in {path} cannot be read" in captured.out
    assert "rebuilding it" in captured.out and "accuracy" in captured.out
    assert tiny.unreadable(path) is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]     # nothing left aside


def test_sigterm_ends_a_run_like_ctrl_c(tmp_path, tiny_dir):
    """What a cluster scheduler sends: the run is marked interrupted and says so in one line."""
    import signal
    import time
    out = tmp_path / "run"
    args = ["--model", str(tiny_dir), *SMALL, "--eval-limit", "16", "--epochs", "3",
            "--device", "cpu", "--quiet", "--output-dir", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "ttrv.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:   # mid-run: status.json says running and the base evaluation is saved
        status = None
        while proc.poll() is None and not (status == "running" and
                                           (out / "predictions_base.jsonl").exists()):
            time.sleep(0.05)
            try:
                status = json.loads((out / "status.json").read_text())["status"]
            except (OSError, ValueError):
                pass
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("terminated (SIGTERM); marked interrupted in")
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "interrupted" and "predictions_base.jsonl" in status["saved"]


def test_eval_takes_ttrv_s_data_and_protocol_flags(tmp_path, capsys, monkeypatch):
    """The same flags as ttrv.py (one definition, config.Config's), its old flags as aliases."""
    seen = {}

    def load_dataset(name, split, **kw):
        seen.update(kw, name=name, split=split)
        return ["example"] * 10

    def evaluate(model, processor, examples, autocast=None, prepare=None, **kw):
        seen.update(kw, examples=len(examples), num_workers=prepare.keywords["num_workers"])
        return evaluation.EvalResult.of([dict(correct=1, prediction="A")])
    monkeypatch.setattr(presets, "load_dataset", load_dataset)
    monkeypatch.setattr(models, "load", lambda *a, **k: (torch.nn.Linear(1, 1), None))
    monkeypatch.setattr(math_data, "check_fits", lambda *a: None)     # no real model or data
    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    new = ["--eval-limit", "3", "--data-seed", "7", "--protocol", "official", "--device", "cpu",
           "--max-image-side", "500", "--eval-batch-size", "2", "--eval-max-new-tokens", "5",
           "--num-workers", "2"]
    old = ["--limit", "3", "--seed", "7", "--protocol", "official", "--device", "cpu",
           "--max-image-side", "500", "--batch-size", "2", "--max-new-tokens", "5",
           "--num-workers", "2"]
    for argv in (new, old):
        seen.clear()
        assert eval_cli.main(["--model", str(model), *argv]) == 0, capsys.readouterr().err
        assert seen == dict(name="shapes", split="test", data_dir=None, seed=7,
                            protocol="official", max_image_side=500, examples=3, batch_size=2,
                            max_new_tokens=5, num_workers=2)
    assert set(eval_cli.EVAL_FIELDS) <= {f.name for f in dataclasses.fields(config.Config)}
