"""harness/trl_rewards.py: ttrv's rewards as TRL GRPOTrainer reward functions. Each group of
num_generations consecutive completions is scored together exactly as ttrv's loop scores it
(ttrv.score), the per-token rewards read the model at the completion's positions, and one real
GRPOTrainer step runs on tiny-math with them (CPU, a random-weight model: nothing about what it
learns is asserted)."""
import math

import numpy as np
import pytest
import torch

import data
import math_answers
import rollout
import ttrv
import vlm
from harness import tiny_math
from harness.trl_rewards import GroupReward, prompt_ids


@pytest.fixture(autouse=True)
def no_wall_clock_timeouts(monkeypatch):
    monkeypatch.setattr(math_answers, "_timeout", lambda: None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return vlm.load(str(tiny_math.build_tiny_math(tmp_path_factory.mktemp("tiny-math"))))


TEXTS = ["\\boxed{7}", "\\boxed{7}", "\\boxed{8}", "none",      # prompt a
         "\\boxed{1}", "\\boxed{2}", "\\boxed{2}", "\\boxed{2}"]  # prompt b
PROMPTS = ["a"] * 4 + ["b"] * 4


@pytest.mark.parametrize("name", ["majority", "ttrv", "frequency"])
def test_each_group_gets_the_loop_s_rewards(name):
    hp = ttrv.Settings(reward=name)
    want = [ttrv.score(TEXTS[g:g + 4], data.Example("q", "", [], None, None, None), hp, None)[0]
            for g in (0, 4)]
    got = GroupReward(name, 4)(prompts=PROMPTS, completions=TEXTS, completion_ids=[[1]] * 8,
                               answer=["7"] * 8, trainer_state=None)
    assert got == pytest.approx(np.concatenate(want).tolist())
    if name == "majority":
        assert got == [1, 1, 0, 0, 0, 1, 1, 1]


def test_options_make_a_question_multiple_choice_and_messages_are_read():
    completions = [[{"role": "assistant", "content": t}] for t in ["B", "B", "(c)", "K"]]
    got = GroupReward("majority", 4)(prompts=[[{"role": "user", "content": "q"}]] * 4,
                                     completions=completions, options=[["x", "y", "z"]] * 4)
    assert got == [1, 1, 0, 0]


def test_groups_must_be_whole_and_of_one_prompt():
    with pytest.raises(ValueError, match="not whole groups of num_generations=3"):
        GroupReward("majority", 3)(prompts=PROMPTS, completions=TEXTS)
    with pytest.raises(ValueError, match="answer different prompts"):
        GroupReward("majority", 8)(prompts=PROMPTS, completions=TEXTS)
    with pytest.raises(ValueError, match="pass model="):
        GroupReward("dare", 4)


def reference_stat(model, tokenizer, prompt, ids, stat, temperature=1.0):
    """The statistic from the full logits of one plain forward (no logits_to_keep)."""
    row = torch.tensor([prompt_ids(tokenizer, prompt) + ids])
    logits = model(input_ids=row).logits[0, -len(ids) - 1:-1]                       # [T, V]
    return float(rollout.TOKEN_STATS[stat](torch.log_softmax(logits / temperature, -1)).mean())


@pytest.mark.parametrize("stat,name", [("entropy", "dare"), ("self_certainty", "self-certainty")])
def test_per_token_rewards_read_the_completion_positions(tiny, stat, name):
    model, tokenizer = tiny
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in ["\\boxed{5}", "the sum is 5"]]
    reward = GroupReward(name, 2, model=model, tokenizer=tokenizer, temperature=0.7)
    with torch.no_grad():
        want = [reference_stat(model, tokenizer, prompt, i, stat, 0.7) for i in ids]
    assert reward.token_stats([prompt] * 2, ids) == pytest.approx(want, abs=1e-5)
    if name == "self-certainty":      # INTUITOR's reward is the certainty itself: higher, more
        assert reward(prompts=[prompt] * 2, completions=["", ""], completion_ids=ids) == \
            pytest.approx(want, abs=1e-5)
        assert all(v > 0 for v in want)                    # KL(U || pi) >= 0, 0 only if uniform
    else:                             # DARE's u is H / ln V: in [0, 1]
        assert all(0 <= v <= 1 for v in want)


def test_self_certainty_ranks_a_peaked_distribution_above_a_flat_one():
    V = 10
    flat = torch.log_softmax(torch.zeros(1, V), -1)
    peaked = torch.log_softmax(torch.tensor([[5.0] + [0.0] * (V - 1)]), -1)
    assert float(rollout.self_certainty(flat)) == pytest.approx(0.0, abs=1e-6)
    assert float(rollout.self_certainty(peaked)) > 0.5
    assert float(rollout.self_certainty(peaked)) == pytest.approx(
        -math.log(V) - float(peaked.mean()))


def test_one_grpo_trainer_step_on_tiny_math(tiny, tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    model, tokenizer = tiny
    questions = tiny_math.load_tiny_math("test")[:2]
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": q.question}],
                                  "answer": q.answer} for q in questions])
    calls = []
    vote = GroupReward("majority", 4)
    dare = GroupReward("dare", 4, model=model, tokenizer=tokenizer)

    def recorded(**kw):
        calls.append(kw)
        return vote(**kw)
    recorded.__name__ = "ttrv_majority"
    args = trl.GRPOConfig(output_dir=str(tmp_path), num_generations=4,
                          per_device_train_batch_size=4, max_completion_length=6, max_steps=1,
                          learning_rate=1e-4, use_cpu=True, report_to=[], logging_steps=1,
                          save_strategy="no", bf16=False, seed=0)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[recorded, dare], args=args,
                              train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    assert len(calls) == 1 and len(calls[0]["completions"]) == 4
    assert calls[0]["answer"] == [calls[0]["answer"][0]] * 4       # one prompt's group
    log = trainer.state.log_history[0]
    assert "rewards/ttrv_majority/mean" in log and "rewards/ttrv_dare/mean" in log
    assert trainer.state.global_step == 1
