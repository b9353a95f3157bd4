"""Text-only causal LMs through the model seam (vlm.py) and the loop on free-form math questions
(answers.py, eval.py's avg@K / maj@K), on a random-weight tiny-math model (harness/tiny_math.py:
Qwen2 architecture, Qwen2.5-Math's prompt format)."""

import json
import shutil

import numpy as np
import pytest
import torch

import answers
import data
import eval as evaluation
import rewards
import rollout
import shared_prefix
import ttrv
from harness.run import load_models
from harness.config import parse_args
import vlm
from harness import cli, families, presets, tiny_math

QUESTIONS = ["What is 3 + 4?", "What is 12 + 19?"]


@pytest.fixture(scope="session")
def math_dir(tmp_path_factory):
    """A random-weight tiny-math checkpoint (no teaching): config, weights, tokenizer."""
    return tiny_math.build_tiny_math(tmp_path_factory.mktemp("tiny-math-random"))


@pytest.fixture(scope="session")
def loaded(math_dir):
    return vlm.load(str(math_dir))


def test_a_text_model_loads_as_a_causal_lm_whose_processor_is_its_tokenizer(loaded):
    model, tokenizer = loaded
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert vlm.tokenizer_of(tokenizer) is tokenizer and tokenizer.padding_side == "left"
    assert vlm.placeholder_token_ids(model) == [] and families.freeze_vision(model) is False


def test_the_prompt_is_the_template_s_own_system_prompt_and_no_suffix(loaded):
    _, tokenizer = loaded
    inputs = vlm.prompt_inputs(tokenizer, [None, None], QUESTIONS)
    assert set(inputs) == {"input_ids", "attention_mask"} and inputs.pixel_rows is None
    assert inputs["attention_mask"][0, 0] == 0 and inputs["attention_mask"][:, -1].all()  # left
    text = tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=False)
    assert text.endswith("<|im_start|>system\nPlease reason step by step, and put your final "
                         "answer within \\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 3 + 4?"
                         "<|im_end|>\n<|im_start|>assistant\n")
    assert vlm.prompt_suffix(tokenizer) == ""


def test_a_template_without_the_boxed_instruction_gets_ttrl_s_suffix(math_dir, tmp_path):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(math_dir)
    tokenizer.chat_template = tokenizer.chat_template.replace(tiny_math.SYSTEM, "Be helpful.")
    inputs = vlm.prompt_inputs(tokenizer, [None], QUESTIONS[:1])
    text = tokenizer.decode(inputs["input_ids"][0])
    assert text.endswith("What is 3 + 4?\nPlease reason step by step, and put your final answer "
                         "within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    assert vlm.prompt_suffix(tokenizer) == vlm.TTRL_SUFFIX


def test_both_end_tokens_stop_it_though_the_generation_config_names_one(loaded):
    model, tokenizer = loaded
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")]
    assert model.generation_config.eos_token_id == ids[0]
    assert vlm.end_token_ids(model, tokenizer) == sorted(ids)


def test_a_model_without_a_chat_template_ends_in_one_sentence_before_its_weights_load(
        math_dir, tmp_path, monkeypatch):
    bare = tmp_path / "bare"
    shutil.copytree(math_dir, bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    for f in bare.glob("chat_template.*"):
        f.unlink()
    monkeypatch.setattr(vlm, "load_model", lambda *a, **k: pytest.fail("weights loaded first"))
    with pytest.raises(vlm.ModelError, match="has no chat template, so ttrv cannot write its "
                                             "prompts; use a checkpoint") as e:
        vlm.load(str(bare))
    message = str(e.value)
    assert message.startswith(str(bare)) and message.endswith(".") and "\n" not in message


def test_the_shared_prefix_path_equals_n_copies_without_an_image(loaded):
    model, tokenizer = loaded
    inputs = vlm.prompt_inputs(tokenizer, [None, None], QUESTIONS)
    rolls = []
    for sampler in (shared_prefix, rollout):
        rolls.append(sampler.sample(model, inputs, 3, temperature=1.0, top_p=1.0, max_new_tokens=5,
                                    eos_token_ids=vlm.end_token_ids(model, tokenizer),
                                    pad_token_id=vlm.pad_token_id(tokenizer),
                                    generator=torch.Generator().manual_seed(0),
                                    stats=("entropy",)))                       # [6, T]
    roll, plain = rolls
    assert torch.equal(roll.completion_ids, plain.completion_ids)    # the same draws
    assert torch.equal(roll.mask, plain.mask)
    fast = shared_prefix.logprobs(model, inputs, roll.completion_ids, roll.mask)
    slow = rollout.logprobs(model, inputs, roll.completion_ids, roll.mask)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    for r in rolls:                                                  # the samplers' own, old policy
        torch.testing.assert_close(r.logprobs, slow, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(roll.stats["entropy"], plain.stats["entropy"], atol=1e-5, rtol=1e-4)
    one = vlm.split_inputs(inputs)[1]
    assert one["input_ids"].shape[1] == int(inputs["attention_mask"][1].sum())     # no padding


def test_math_questions_vote_on_the_boxed_answer_and_no_answer_never_wins():
    q = data.Example("m", "What is 3 + 4?", [], "7", None, None)
    texts = ["\\boxed{7}", "so \\boxed{ 7 }", "\\boxed{8}", "the sum is 7", "\\boxed{}", "7"]
    keys = answers.vote_keys(texts, q)
    assert keys[0] == keys[1] != keys[2]
    assert all(isinstance(k, rewards.NoAnswer) for k in keys[3:])
    assert rewards.majority_reward(keys).tolist() == [1, 1, 0, 0, 0, 0]
    nothing = answers.vote_keys(["the sum is 7", "\\boxed{}", "none"], q)
    assert rewards.majority_reward(nothing).tolist() == [0, 0, 0]      # no answer: reward 0


def test_the_kind_of_a_question_is_decided_by_its_data():
    image = object()
    assert data.Example("a", "Q", ["x", "y"], "A", "x", None).kind == "choice"    # GPQA: letters
    assert data.Example("c", "How many?", [], "4", "4", image).kind == "count"
    assert data.Example("m", "What is 1 + 1?", [], "2", None, None).kind == "math"
    with pytest.raises(data.DataError, match="kind"):
        data.Example("m", "Q", [], "2", None, None, kind="essay")
    test, train = presets.load_dataset("tiny-math"), presets.load_dataset("tiny-math", "train")
    assert {e.kind for e in test} == {"math"} and not {e.question for e in test} & {
        e.question for e in train}
    assert all(int(e.answer) == sum(map(int, e.question[8:-1].split(" + "))) for e in test)


def test_grading_and_the_majority_of_k_samples():
    q = data.Example("m", "What is 3 + 4?", [], "7", None, None)
    assert evaluation.score("so \\boxed{7}", q) == dict(prediction="7", correct=True)
    assert evaluation.score("the sum is 7", q) == dict(prediction=None, correct=False)
    assert answers.majority(["8", None, "7", "7", "8"], q) == "8"      # ties: first seen
    assert answers.majority([None, None], q) is None
    choice = data.Example("g", "Q", ["a", "b", "c", "d"], "C", "c", None)
    assert answers.majority(["C", "B", "C"], choice) == "C"


def test_avg_and_maj_at_k_are_the_mean_and_the_majority_of_the_k_samples(loaded, monkeypatch):
    model, tokenizer = loaded
    qs = [data.Example(f"m{i}", f"What is {i} + 1?", [], str(i + 1), None, None) for i in range(2)]
    # k = 4 samples per question, as shared_prefix.sample would return them (rows b*k + j)
    texts = ["\\boxed{1}", "\\boxed{1}", "\\boxed{5}", "no box",        # q0: 2/4 right, maj right
             "\\boxed{2}", "\\boxed{3}", "\\boxed{3}", "\\boxed{3}"]    # q1: 1/4 right, maj wrong
    ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts],
        batch_first=True, padding_value=vlm.pad_token_id(tokenizer))
    fake = rollout.Rollouts(ids, torch.zeros(ids.shape), torch.ones_like(ids))
    calls = []
    monkeypatch.setattr(shared_prefix, "sample", lambda m, inputs, n, **kw: calls.append((n, kw)) or fake)
    r = evaluation.evaluate(model, tokenizer, qs, max_new_tokens=3, samples=4, temperature=0.6,
                            top_p=0.95, progress=False)
    assert calls[0][0] == 4 and (calls[0][1]["temperature"], calls[0][1]["top_p"]) == (0.6, 0.95)
    assert [p["avg_at_k"] for p in r.predictions] == [0.5, 0.25]
    assert [p["maj_at_k"] for p in r.predictions] == [1.0, 0.0]
    assert (r.avg_at_k, r.maj_at_k) == (0.375, 0.5)


@pytest.mark.parametrize("reward", ["majority", "dare"])
def test_the_loop_adapts_a_text_model_on_math_questions(math_dir, reward):
    cfg = parse_args(["--model", str(math_dir), "--reward", reward, "--rollouts", "4",
                           "--prompts-per-step", "2", "--epochs", "1", "--max-new-tokens", "4",
                           "--lr", "1e-3", "--quiet"])
    cfg.device = "cpu"
    setup, _ = load_models(cfg, log=lambda *a: None)
    history = ttrv.adapt(setup, presets.load_dataset("tiny-math")[:2], cfg)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert history[0]["response_tokens"] > 0


def test_a_whole_run_on_tiny_math_writes_avg_and_maj_at_k(math_dir, tmp_path):
    out = tmp_path / "run"
    code = cli.main(["--model", str(math_dir), "--dataset", "tiny-math", "--reward", "majority",
                     "--num-samples", "2", "--rollouts", "3", "--prompts-per-step", "2",
                     "--epochs", "1", "--eval-limit", "3", "--max-new-tokens", "4",
                     "--eval-samples", "2", "--device", "cpu", "--quiet", "--no-save-model",
                     "--base-majority", "--output-dir", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("base", "adapted"):
        assert {"accuracy", "avg@2", "maj@2", "pass@1", "pass@2", "answer_entropy",
                "response_length"} <= set(results[key])
        assert 0 <= results[key]["avg@2"] <= 1 and 0 <= results[key]["maj@2"] <= 1
        assert results[key]["pass@1"] == pytest.approx(results[key]["avg@2"])
        assert results[key]["avg@2"] <= results[key]["pass@2"] <= 1
    assert 0 <= results["base"]["votes_maj@3"] <= 1 and "votes_maj@3" not in results["adapted"]
    assert "maj@3 of the votes" in (out / "results.md").read_text()
    predictions = [json.loads(line) for line in open(out / "predictions_base.jsonl")]
    assert len(predictions) == 3 and {"avg_at_k", "maj_at_k"} <= set(predictions[0])


def test_tiny_math_is_offline_with_its_own_dataset_and_sizes():
    cfg = parse_args(["--model", "tiny-math"])
    assert (cfg.dataset, cfg.max_new_tokens, cfg.lr) == ("tiny-math", 12, 1e-4)
    assert parse_args(["--model", "tiny-math", "--dataset", "jsonl:x"]).dataset == "jsonl:x"
    assert not cli.needs_hub("tiny-math", "tiny-math") and cli.needs_hub("tiny-math", "math500")
