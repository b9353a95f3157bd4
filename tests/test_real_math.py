"""Qwen2.5-Math-1.5B's real files (../shared/fixtures/qwen2.5-math-1.5b: config, generation
config, tokenizer with its chat template; no weights) under CPU-sized random weights
(tiny.build_from_files): what `--model Qwen/Qwen2.5-Math-1.5B` meets. The rendered prompt (its
default system prompt, no suffix), both end tokens, and whole ttrv.py runs on math questions.
Skipped in a clone without ../shared (failing under CI=true)."""

import hashlib
import json
from pathlib import Path

import pytest

import vlm
from conftest import shared_path
from harness import cli, families, tiny

ROOT = Path(__file__).resolve().parent.parent
MATH = "qwen2.5-math-1.5b"
SMALL = ["--num-samples", "2", "--rollouts", "2", "--prompts-per-step", "2", "--epochs", "1",
         "--eval-limit", "2", "--max-new-tokens", "2", "--eval-samples", "2", "--quiet",
         "--device", "cpu", "--no-save-model", "--reward", "majority"]


def fixture_dir() -> Path:
    return shared_path("fixtures", MATH)    # skips without ../shared; fails under CI=true


@pytest.fixture(scope="session")
def math_files():
    """The shrunk Qwen2.5-Math next to the fixture, built once and cached under $TTRV_CACHE,
    keyed by the fixture files, the shrink recipe, the pinned numerics and the transformers
    version. Its directory name holds "qwen2.5-math", as a local copy of the checkpoint's would."""
    import transformers
    src = fixture_dir()
    key = hashlib.sha256(json.dumps([tiny.SHRINK_TEXT, tiny.PINNED, transformers.__version__]).encode())
    for f in sorted(src.iterdir()):
        key.update(f.name.encode() + f.read_bytes())
    path = tiny.default_cache_dir() / f"real-{MATH}-{key.hexdigest()[:10]}"
    return tiny.build_cached(path, lambda tmp: tiny.build_from_files(src, tmp))


def test_the_prompt_is_qwen2_5_math_s_system_prompt_without_a_suffix(math_files):
    model, tokenizer = vlm.load(str(math_files))
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.vocab_size == 151936
    inputs = vlm.prompt_inputs(tokenizer, [None, None], ["What is 1 + 1?", "Find $x$."])
    text = tokenizer.decode(inputs["input_ids"][0])
    assert text == ("<|im_start|>system\nPlease reason step by step, and put your final answer "
                    "within \\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n"
                    "<|im_start|>assistant\n")      # the longer prompt: no padding, no BOS
    assert (inputs["input_ids"][1] == 151643).sum() > 0 and inputs["attention_mask"][1, 0] == 0
    assert vlm.prompt_suffix(tokenizer) == ""


def test_both_end_tokens_stop_qwen2_5_math(math_files):
    model, tokenizer = vlm.load(str(math_files))
    assert model.generation_config.eos_token_id == 151643              # <|endoftext|> only
    assert vlm.end_token_ids(model, tokenizer) == [151643, 151645]     # + <|im_end|>
    assert vlm.pad_token_id(tokenizer) == 151643
    assert families.ttrl_temperature(model) == 1.0                          # TTRL's Qwen2.5-Math


def test_a_whole_run_on_tiny_math_questions(math_files, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["--model", str(math_files), "--dataset", "tiny-math", "--output-dir",
                     str(out)] + SMALL) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert {"accuracy", "avg@2", "maj@2"} <= set(results["adapted"])
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1]["updates"] == 2


def test_a_whole_run_on_a_jsonl_file_of_math_questions(math_files, tmp_path, capsys):
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "What is $\\frac{1}{2} + \\frac{1}{2}$?", "answer": "1"},
        {"question": "Solve $2x = 6$ for $x$.", "answer": "3"},
        {"question": "What is $3 \\cdot 4$?", "answer": "12"}]))
    out = tmp_path / "run"
    assert cli.main(["--model", str(math_files), "--dataset", f"jsonl:{path}", "--output-dir",
                     str(out)] + SMALL) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["base"]["total"] == 2 and {"avg@2", "maj@2"} <= set(results["base"])
