"""The processes contract (harness/processes.py, harness/distributed.py) call by call, without a
model: two gloo processes run tests/dist_processes_worker.py (seconds, not a torchrun of the
loop), and one process checks OneProcess and the loop's stand-ins (ttrv.update on a tiny text
LM, ttrv.step_metrics). Each test fails when its part of the contract is removed:
stand-ins weigh 0, every rank runs the same counts and lengths, sums and means are over the
ranks, one rank's error ends every rank with its message."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

import rollout
import ttrv
from harness.config import Config
from processes import ONE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Each rank's answers (rank 0's, rank 1's)."""
    out = tmp_path_factory.mktemp("procs") / "got"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workers = [subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "dist_processes_worker.py"), str(out)], cwd=ROOT,
        env=dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", OMP_NUM_THREADS="1",
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    logs = []
    try:
        for w in workers:
            logs.append(w.communicate(timeout=180)[0])
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(logs)[-4000:]
    return [torch.load(f"{out}.rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_each_rank_gets_its_share_padded_with_stand_ins(ranks):
    zero, one = ranks
    assert (zero["rank"], one["rank"], zero["count"]) == (0, 1, 2)
    assert zero["share"] == [10, 12] and one["share"] == [11, None]
    assert zero["updates"] == [[0], [2]] and one["updates"] == [[1], [None]]   # same counts


def test_evaluation_shares_are_equal_in_size_and_gather_back_in_order(ranks):
    zero, one = ranks
    assert zero["contiguous"] == [0, 1, 2] and len(one["contiguous"]) == 3
    assert one["contiguous"][:2] == [3, 4]
    assert zero["gathered"] == one["gathered"] == [0, 1, 2, 3, 4]     # padding dropped


def test_sums_flags_and_means_are_over_every_rank(ranks):
    for got in ranks:
        assert got["sum"] == 3.0
        assert got["any_one"] is True and got["any_none"] is False
        assert got["mean"]["reward"] == 2.0            # (3 + 5) / (3 + 1), not the means' mean
        assert got["mean"]["only_rank0"] == 1.0        # a rank with none counts 0, no NaN
        assert math.isnan(got["mean"]["none"])


def test_rollouts_are_padded_to_the_longest_rank_every_field_included(ranks):
    for got in ranks:
        r = got["same_length"]
        ids, logp, ent, mask = r.completion_ids, r.logprobs, r.stats["entropy"], r.mask
        assert ids.shape == logp.shape == ent.shape == mask.shape == (3, 4)
    zero = ranks[0]["same_length"]
    assert zero.completion_ids[:, 2:].eq(99).all() and zero.mask[:, 2:].eq(0).all()
    assert zero.logprobs[:, 2:].eq(0).all() and zero.stats["entropy"][:, 2:].eq(0).all()
    assert zero.stats["entropy"][:, :2].eq(0.25).all()            # DARE's u survives the padding


def test_one_rank_s_error_ends_every_rank_with_its_message(ranks):
    zero, one = ranks
    assert zero["checked_ok"] == ("ok", "rank 0 ok") and one["checked_ok"] == ("ok", "rank 1 ok")
    assert one["checked_data"] == ("error", "DataError", "Cannot read image x.png; replace it.")
    assert zero["checked_data"] == ("error", "DataError",
                                    "rank 1: Cannot read image x.png; replace it.")
    assert zero["checked_other"] == ("error", "RuntimeError",
                                     "rank 1: ValueError: Cannot read image x.png; replace it.")
    assert one["checked_other"][:2] == ("error", "ValueError")
    for got in ranks:
        assert got["on_main_ok"] == ("ok", "computed on rank 0")
        assert got["on_main_error"] == ("error", "DataError", "the main rank failed")
    assert zero["peer_error"] == "rank 1: planted fault" and one["peer_error"] is None


# ----------------------------------------------------------------------------- one process

def test_one_process_is_the_identity():
    assert ONE.updates([5, 6, 7], 2) == [[5, 6], [7]]
    assert ONE.share([1, 2, 3]) == [1, 2, 3] and ONE.sum(torch.tensor(2.5)) == 2.5
    assert ONE.mean({"a": (3.0, 2)})["a"] == 1.5 and math.isnan(ONE.mean({"a": (0.0, 0)})["a"])
    assert ONE.checked(lambda x: x + 1, 1) == 2 and ONE.peer_error() is None


@pytest.fixture(scope="module")
def text_lm():
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return AutoModelForCausalLM.from_config(cfg)


def group(model, seed, weight, cfg):
    g = torch.Generator().manual_seed(seed)
    prompt = {"input_ids": torch.randint(1, 64, (1, 5), generator=g),
              "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    ids = torch.randint(1, 64, (3, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.float)
    with torch.no_grad():
        old = rollout.logprobs(model, prompt, ids, mask)
    s = ttrv.Setup(model, None, None, torch.autocast("cpu", enabled=False), rollout, ONE)
    return ttrv.experience(s, rollout.Experience(prompt, ids, mask, old, None,
                                                 torch.randn(3, generator=g), weight), cfg)


def updated(model, groups, cfg):
    """The weights after one ttrv.update under plain SGD (lr 1: the step is the gradient)."""
    start = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters()]
    s = ttrv.Setup(model, None, None, torch.autocast("cpu", enabled=False), rollout, ONE)
    ttrv.update(s, torch.optim.SGD(params, lr=1.0), groups, cfg)
    after = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(start)
    return after


@pytest.mark.parametrize("loss_agg", ["token_mean", "sequence_mean"])
def test_a_stand_in_group_weighs_nothing_in_the_update(text_lm, loss_agg):
    cfg = Config(beta=0.0, max_grad_norm=1e9, loss_agg=loss_agg)
    real = group(text_lm, 0, 1.0, cfg)
    alone = updated(text_lm, [real], cfg)
    with_stand_in = updated(text_lm, [real, group(text_lm, 1, 0.0, cfg)], cfg)
    moved = [k for k in alone if not torch.equal(alone[k], text_lm.state_dict()[k])]
    assert moved
    for k in alone:
        torch.testing.assert_close(with_stand_in[k], alone[k], rtol=1e-5, atol=1e-7, msg=k)


def test_a_stand_in_counts_nothing_in_the_step_s_metrics():
    figures = [dict(reward=0.5, answer_entropy=1.0), dict(reward=9.0, answer_entropy=9.0)]
    stats = [dict(loss=0.25, kl=0.0), dict(loss=7.0, kl=7.0)]
    m = ttrv.step_metrics(figures, stats, [1.0, 0.0], ONE)
    assert (m["reward"], m["answer_entropy"], m["loss"], m["kl"]) == (0.5, 1.0, 0.25, 0.0)
