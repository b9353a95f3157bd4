"""Faults on the newer paths (issue 22): each ends in one sentence that says what to do, with
nothing lost and no traceback; nonsense is refused before any model time. GRPO-TTA's signals,
a folder with fewer classes than --group-size, a run directory removed mid-run, a full disk,
non-finite GRPO-TTA flags, bad math rows, a question longer than the model's context, image
questions for a text-only model, a LoRA rank above the layers it adapts, bench.py's flags.
docs/errors.md lists these."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import data
import eval as evaluation
import grpo_tta
import ttrv
import vlm
from harness import (bench_logprob, bench_models, bench_text, cli, eval_cli, gpu_check,
                     grpo_tta_cli, lora, math_data, presets, processes, tiny_clip, tiny_math)
from harness.grpo_tta_config import TTAConfig, fit_group, parse_args as tta_args

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--num-samples", "2", "--rollouts", "3", "--prompts-per-step", "2", "--epochs", "1",
         "--eval-limit", "4", "--max-new-tokens", "2", "--eval-batch-size", "4", "--device",
         "cpu", "--quiet"]
TTA_SMALL = ["--limit", "4", "--views", "8", "--steps", "1", "--quiet"]


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return tiny_clip.build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def math_dir(tmp_path_factory):
    return tiny_math.build_tiny_math(tmp_path_factory.mktemp("tiny_math"))


def _status(out):
    return json.loads((out / "status.json").read_text())


def _one_clean_line(err):
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


# ------------------------------------------------------------------------------- GRPO-TTA's signals

def test_sigterm_ends_a_grpo_tta_run_like_ctrl_c(tmp_path, clip_dir):
    """What a cluster scheduler sends: marked interrupted, one line, exit 143, as ttrv.py."""
    out = tmp_path / "run"
    args = ["--model", str(clip_dir), "--limit", "200", "--views", "8", "--steps", "1",
            "--quiet", "--output-dir", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "grpo_tta.py"), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:   # mid-run: an image's predictions are written
        preds = out / "predictions.jsonl"
        while proc.poll() is None and not (preds.exists() and preds.read_text().strip()):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert _one_clean_line(err).startswith("terminated (SIGTERM); marked interrupted in")
    status = _status(out)
    assert status["status"] == "interrupted" and "predictions.jsonl" in status["saved"]


def test_ctrl_c_during_grpo_tta_marks_the_run_interrupted(tmp_path, clip_dir, capsys,
                                                         monkeypatch):
    real = grpo_tta.adapt_image
    calls = []

    def second_image_interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(grpo_tta, "adapt_image", second_image_interrupted)
    out = tmp_path / "run"
    assert grpo_tta_cli.main(["--model", str(clip_dir), *TTA_SMALL, "--output-dir", str(out)]) == 130
    assert _one_clean_line(capsys.readouterr().err).startswith("interrupted; marked interrupted")
    assert _status(out)["status"] == "interrupted"


# ------------------------------------------------------------------- fewer classes than K

def _folder(root, classes):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), (60 * i, 90, 160)).save(root / c / f"{i}.png")
    return root


def test_a_folder_with_fewer_classes_than_the_group_uses_all_of_them_and_says_so(
        tmp_path, clip_dir, capsys):
    root = _folder(tmp_path / "f", ["cat", "dog", "fox"])
    out = tmp_path / "run"
    code = grpo_tta_cli.main(["--model", str(clip_dir), "--dataset", f"folder:{root}", "--views", "8",
                          "--steps", "1", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: folder:{root} has 3 classes, fewer than --group-size 5; each group "
                     "is all 3 of them."]
    assert json.loads((out / "config.json").read_text())["group_size"] == 3
    assert json.loads((out / "results.json").read_text())["GRPO-TTA"]["total"] == 6


def test_the_group_shrinks_only_where_it_must():
    cfg = TTAConfig(group_size=5)
    assert fit_group(cfg, 5, log=pytest.fail) is cfg                 # enough classes: silent
    with_replacement = TTAConfig(group_size=5, sampling="with-replacement")
    assert fit_group(with_replacement, 3, log=pytest.fail).group_size == 5   # draws repeat
    assert fit_group(TTAConfig(sampling="top-k"), 4, log=lambda *a: None).group_size == 4
    with pytest.raises(data.DataError, match="has 1 class; CLIP adaptation needs at least 2"):
        fit_group(cfg, 1)


# ------------------------------------------------------------------------------- the run directory

def _remove_dir_then(out, real):
    def fn(*a, **k):
        shutil.rmtree(out)
        return real(*a, **k)
    return fn


def test_a_run_directory_removed_mid_run_ends_in_one_sentence(tmp_path, tiny_dir, capsys,
                                                              monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(ttrv, "adapt", _remove_dir_then(out, ttrv.adapt))
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--output-dir", str(out)]) == 1
    line = _one_clean_line(capsys.readouterr().err)
    assert line == (f"error: the run directory {out} was removed during the run, so its files "
                    "are lost; run again with an --output-dir that nothing else removes.")


def test_a_grpo_tta_run_directory_removed_mid_run_ends_in_one_sentence(tmp_path, clip_dir,
                                                                       capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(grpo_tta, "adapt_image", _remove_dir_then(out, grpo_tta.adapt_image))
    assert grpo_tta_cli.main(["--model", str(clip_dir), *TTA_SMALL, "--output-dir", str(out)]) == 1
    line = _one_clean_line(capsys.readouterr().err)
    assert line.startswith(f"error: the run directory {out} was removed during the run")


def _disk_full(kind, path):
    """What a full disk raises: Python's OSError (with the file), or safetensors' own error,
    which carries the errno only in its message."""
    if kind == "oserror":
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    from safetensors import SafetensorError
    return SafetensorError("Error while serializing: I/O error: No space left on device "
                           f"(os error {errno.ENOSPC})")


@pytest.mark.parametrize("kind", ["oserror", "safetensors"])
def test_a_full_disk_while_saving_the_model_ends_in_one_sentence_naming_the_path(
        kind, tmp_path, tiny_dir, capsys, monkeypatch):
    out = tmp_path / "run"

    def save(self, model, path):
        path.mkdir(parents=True)
        raise _disk_full(kind, path / "model.safetensors")
    monkeypatch.setattr(processes.OneProcess, "save", save)
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    where = out / "model" / "model.safetensors" if kind == "oserror" else out
    sentence = (f"no space left on the disk holding {where}, so the file being written is "
                "incomplete; free some space there, or pass an --output-dir on another disk, "
                "and run again.")
    assert err.splitlines()[0] == f"error: {sentence}"
    assert err.splitlines()[1].startswith(f"run failed; marked failed in {out / 'status.json'}")
    status = _status(out)
    assert status["status"] == "failed" and status["error"] == sentence
    assert "results.json" in status["saved"]                        # kept, not lost


def test_a_full_disk_in_grpo_tta_ends_in_one_sentence(tmp_path, clip_dir, capsys, monkeypatch):
    out = tmp_path / "run"

    def table(results):                # the last file written: results.md
        raise _disk_full("oserror", out / "results.md")
    monkeypatch.setattr(grpo_tta_cli, "table", table)
    assert grpo_tta_cli.main(["--model", str(clip_dir), *TTA_SMALL, "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[0].startswith(
        f"error: no space left on the disk holding {out / 'results.md'}, so the file being "
        "written is incomplete; free some space there")
    assert _status(out)["status"] == "failed" and "results.json" in _status(out)["saved"]


def test_a_full_disk_before_the_run_starts_is_refused_before_loading(tmp_path, capsys,
                                                                      monkeypatch):
    """status.json "running" is the run directory's first file: a disk that cannot take it ends
    the command before any data or model."""
    real = Path.write_text

    def write_text(self, *a, **k):
        if self.name == "status.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *a, **k)
    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(presets, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    assert cli.main(["--output-dir", str(tmp_path / "run"), "--quiet"]) == 1
    assert _one_clean_line(capsys.readouterr().err) == (
        f"error: cannot write to {tmp_path / 'run'} (No space left on device); pass an "
        "--output-dir you can write to.")


# ------------------------------------------------------------------- nonsense flags and data

@pytest.mark.parametrize("flag_, value", [("--lr", "inf"), ("--confident", "nan"),
                                          ("--beta", "inf"), ("--dispersion-weight", "nan"),
                                          ("--clip-eps", "inf"), ("--weight-decay", "inf")])
def test_grpo_tta_refuses_numbers_that_are_not_finite_before_anything_loads(flag_, value, capsys):
    with pytest.raises(SystemExit) as exit:
        tta_args([flag_, value])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {flag_} {value} is not a finite number; pass a number" in err


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("row, says", [
    ({"question": "2+2?", "answer": True}, "has an answer of type bool (True); write the gold"),
    ({"question": "2+2?", "answer": [4]}, "has an answer of type list ([4]); write the gold"),
    ({"question": "2+2?", "answer": {"v": 4}}, "has an answer of type dict"),
    ('{"question": "2+2?", "answer": NaN}', "has the answer nan; write the gold answer as text"),
    ({"question": "", "answer": "4"}, "has an empty question; write the problem as text."),
    ({"question": "   ", "answer": "4"}, "has an empty question"),
    ({"answer": "4"}, "has no question; write the problem as text."),
    ({"question": None, "answer": "4"}, "has no question"),
    ({"question": 7, "answer": "4"}, "has a question of type int; write the problem as text."),
])
def test_math_rows_with_a_bad_question_or_answer_are_refused_in_one_sentence(row, says, tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [row])
    with pytest.raises(data.DataError, match="line 1 " + says.replace("(", r"\(").replace(
            ")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        presets.load_dataset(f"jsonl:{path}")


def test_math_answers_that_are_numbers_become_their_text(tmp_path):
    """Our choice: a finite number is what a user means by it (AIME's ints, AMC's floats)."""
    path = _jsonl(tmp_path / "p.jsonl", [{"question": "a", "answer": 7},
                                         {"question": "b", "answer": 142.0},
                                         {"question": "c", "answer": -0.25}])
    assert [e.answer for e in presets.load_dataset(f"jsonl:{path}")] == ["7", "142", "-0.25"]


def test_a_benchmark_row_without_its_question_names_the_row(tmp_path):
    _jsonl(tmp_path / "test.jsonl", [{"problem": None, "answer": "4", "unique_id": "u3"}])
    with pytest.raises(data.DataError, match="math500 question u3 has no question"):
        presets.load_dataset("math500", data_dir=str(tmp_path))


def test_a_question_longer_than_the_model_s_context_is_refused_once_the_tokenizer_is_known(
        math_dir):
    model, tokenizer = vlm.load(str(math_dir))
    context = model.config.max_position_embeddings
    fits = math_data.math_example("short", "What is 3 + 4?", "7", "here")
    long = math_data.math_example("long", "What is " + " + ".join(["1"] * context) + "?", "1",
                                  "here")
    math_data.check_fits(tokenizer, model, [fits])
    with pytest.raises(data.DataError, match=rf"question long is a prompt of \d+ tokens, but "
                                             rf".* reads at most {context} \(its context\)"):
        math_data.check_fits(tokenizer, model, [fits], [fits, long])


def test_a_long_math_question_ends_the_run_before_any_evaluation(math_dir, tmp_path, capsys,
                                                                 monkeypatch):
    path = _jsonl(tmp_path / "p.jsonl", [{"question": "What is 3 + 4?", "answer": "7"},
                                         {"question": "What is " + "1 + " * 600 + "1?",
                                          "answer": "601"}])
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    out = tmp_path / "run"
    assert cli.main(["--model", str(math_dir), "--dataset", f"jsonl:{path}", *SMALL,
                     "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: question line2 is a prompt of")
    assert not out.exists()                                   # nothing was saved: removed


def test_a_text_only_model_given_image_questions_is_refused_before_any_evaluation(
        math_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    out = tmp_path / "run"
    assert cli.main(["--model", str(math_dir), "--dataset", "shapes", *SMALL,
                     "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[0] == (f"error: {math_dir} is a text-only model, but question "
                                   "shapes-test-0000 (and 199 more) shows an image; pass a "
                                   "vision-language model, or a dataset of text questions (e.g. "
                                   "tiny-math, jsonl: rows without an image).")
    assert eval_cli.main(["--model", str(math_dir), "--dataset", "shapes"]) == 1     # eval.py
    assert "is a text-only model" in capsys.readouterr().err


def test_questions_with_and_without_images_are_refused_together(tiny_dir):
    model, processor = vlm.load(str(tiny_dir))
    shapes = presets.load_dataset("shapes")[:2]
    with pytest.raises(data.DataError, match="shows an image but here-1 does not; ttrv needs one"):
        math_data.check_fits(processor, model, shapes,
                             [math_data.math_example("here-1", "What is 1 + 1?", "2", "x")])


def test_a_lora_rank_above_the_layers_it_adapts_is_refused(tiny_dir):
    model, _ = vlm.load(str(tiny_dir))
    names = lora.targets(model, train_vision=False)
    layers = dict(model.named_modules())
    smallest = min(min(layers[n].in_features, layers[n].out_features) for n in names)
    with pytest.raises(vlm.ModelError, match=rf"--lora-rank {smallest + 1} is larger than the "
                                             rf"smallest layer it adapts \(.*\); pass --lora-rank "
                                             rf"{smallest} or less\."):
        lora.add(model, smallest + 1, 2.0, train_vision=False)
    policy, _ = lora.add(model, smallest, 2.0, train_vision=False)      # the largest that fits
    assert any("lora_A" in n for n, _ in policy.named_parameters())


# ------------------------------------------------------------------------------- bench.py's flags

@pytest.fixture
def no_bench_runs(monkeypatch):
    """Every bench mode fails the test if it starts: a bad flag must end before."""
    def started(*a, **k):
        raise AssertionError("a benchmark started before the flags were checked")
    for module, name in [(bench_models, "build"), (bench_models, "count_3b"),
                         (bench_models, "count_internvl"), (bench_text, "report"),
                         (bench_logprob, "logprob_memory"), (gpu_check, "main")]:
        monkeypatch.setattr(module, name, started)


@pytest.mark.parametrize("argv, says", [
    (["--rollouts", "0"], "--rollouts 0 is out of range; pass an integer >= 1"),
    (["--threads", "0"], "--threads 0 is out of range"),
    (["--repeats", "0"], "--repeats 0 is out of range"),
    (["--prompts", "-2"], "--prompts -2 is out of range"),
    (["--eval-batch", "0"], "--eval-batch 0 is out of range"),
    (["--device", "foo"], "--device foo is not a device; pass cpu, cuda (or cuda:N) or meta."),
    (["--response-len", "4", "-1"], "--response-len -1 is out of range; pass integers >= 1."),
    (["--text-sampler", "--rollouts", "-1"], "--rollouts -1 is out of range"),
    (["--text-sampler", "--rollouts", "8"], "--rollouts is not used by --text-sampler"),
    (["--logprob-memory", "--logprob-lens", "0"], "--logprob-lens 0 is out of range"),
    (["--logprob-memory", "--markdown"], "--markdown is not used by --logprob-memory"),
    (["--gpu-check", "--threads", "4"], "--threads is not used by --gpu-check"),
    (["--dry-run"], "--dry-run is not used by the step timings (it is read by --gpu-check)"),
    (["--gpu-check-json", "x.json"], "--gpu-check-json is not used by the step timings"),
    (["--arch", "internvl3-2b", "--device", "meta", "--repeats", "2"],
     "--repeats is not used by --device meta (a parameter count)"),
    (["--gpu-check", "--text-sampler"], "--gpu-check and --text-sampler are separate"),
    (["--text-sampler", "--device", "meta"], "--text-sampler times a real model"),
    (["--device", "meta"], "--device meta counts a real architecture's parameters"),
    (["--arch", "internvl3-8b"], "--arch internvl3-8b is counted on the meta device only"),
    (["--arch", "qwen2.5-vl-3b"], "the 3B architecture needs --device cuda"),
    (["--eval-images", "500"], "pass --prompts and --eval-images of at most 200."),
    (["--tiny-dir", "no/such/dir"], "--tiny-dir no/such/dir is not a directory"),
])
def test_bench_refuses_bad_flags_in_one_sentence_before_any_model(argv, says, capsys,
                                                                  no_bench_runs):
    from harness import bench
    with pytest.raises(SystemExit) as exit:
        bench.main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("error:") == 1 and says in err, err


def test_bench_refuses_cuda_where_torch_sees_none(capsys, no_bench_runs, monkeypatch):
    from harness import bench
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit:
        bench.main(["--device", "cuda"])
    assert exit.value.code == 2 and "torch sees no CUDA GPU; pass --device cpu" in (
        capsys.readouterr().err)
