"""--protocol official sets every Config field of the protocol table (docs/protocols.md); flags still win."""

import re
from pathlib import Path

from types import SimpleNamespace

import pytest

from harness import families
from harness.config import Config, parse_args

PROTOCOLS = Path(__file__).resolve().parent.parent / "docs" / "protocols.md"


def table_rows():
    """(field, paper cell, official cell) of docs/protocols.md's protocol table."""
    text = PROTOCOLS.read_text().split("## What each protocol sets")[1].split("\n## ")[0]
    return [tuple(c.strip() for c in line.split("|")[1:4]) for line in text.splitlines()
            if line.startswith("| `")]


def test_official_protocol_sets_each_field_of_the_protocol_table():
    rows = table_rows()
    assert len(rows) >= 8
    paper, official = parse_args([]), parse_args(["--protocol", "official"])
    fields = {f for f in Config.__dataclass_fields__}
    for field, paper_cell, official_cell in rows:
        name = re.match(r"`(\w+)`", field).group(1)
        assert name in fields, name
        if name == "temperature":     # per family: families.official_temperature, in run.run
            assert official.temperature is None and paper.temperature == 1.0
            continue
        if name == "protocol":
            assert (paper.protocol, official.protocol) == ("paper", "official")
            continue
        assert str(getattr(paper, name)) == paper_cell.strip("`"), name
        assert str(getattr(official, name)) == official_cell.split()[0].strip("`"), name
    assert {r[0].split("`")[1] for r in rows} >= set(families.OFFICIAL)


def test_explicit_flags_win_over_the_protocol():
    cfg = parse_args(["--protocol", "official", "--train-rollouts", "32", "--temperature", "0.7",
                      "--adv-ddof", "0", "--no-fixed-adaptation-set"])
    assert (cfg.train_rollouts, cfg.temperature, cfg.adv_ddof, cfg.fixed_adaptation_set) == (
        32, 0.7, 0, False)
    assert cfg.entropy == "normalized" and cfg.no_answer == "text"


@pytest.mark.parametrize("model_type, temperature",
                         [("qwen2_5_vl", 1.5), ("internvl", 1.0), ("qwen2_vl", 1.0)])
def test_the_official_temperature_is_the_loaded_family_s(model_type, temperature):
    model = SimpleNamespace(config=SimpleNamespace(model_type=model_type))
    assert families.official_temperature(model) == temperature


def ttrl_rows():
    """(field, ttrl cell) of docs/protocols.md's --protocol ttrl table."""
    text = PROTOCOLS.read_text().split("## `--protocol ttrl`")[1].split("\nPer benchmark")[0]
    return [tuple(c.strip() for c in line.split("|")[1:3]) for line in text.splitlines()
            if line.startswith("| `")]


def test_ttrl_protocol_sets_each_field_of_its_table():
    rows = ttrl_rows()
    cfg = parse_args(["--protocol", "ttrl", "--model", "Qwen/Qwen2.5-Math-1.5B"])
    for field, cell in rows:
        name = field.strip("`")
        if name == "temperature":     # per family: families.ttrl_temperature, in run.run
            assert cfg.temperature is None
            continue
        assert str(getattr(cfg, name)) == cell.strip("`"), name
    assert {r[0].strip("`") for r in rows} == set(families.TTRL)


@pytest.mark.parametrize("dataset", ["aime24", "amc23", "math500", "math500:level5",
                                     "jsonl:x.jsonl"])
def test_ttrl_protocol_sets_each_benchmark_s_episodes_and_prompts_per_step(dataset):
    text = PROTOCOLS.read_text().split("\nPer benchmark")[1].split("\n### ")[0]
    table = {c[0].strip(" `"): (int(c[2].strip(" `")), int(c[3].strip(" `")))
             for c in (line.split("|")[1:5] for line in text.splitlines() if line.startswith("| `"))}
    assert set(table) == {"aime24", "amc23", "math500"}
    model = ["--model", "Qwen/Qwen2.5-Math-1.5B"]
    cfg = parse_args(["--protocol", "ttrl", "--dataset", dataset] + model)
    default = parse_args(model)
    assert (cfg.epochs, cfg.prompts_per_step) == table.get(     # one level: its benchmark's
        dataset.split(":")[0], (default.epochs, default.prompts_per_step))
    assert parse_args(["--protocol", "ttrl", "--dataset", dataset, "--epochs", "3"] + model
                      ).epochs == 3


def test_tiny_math_keeps_its_sizes_under_the_ttrl_protocol():
    cfg = parse_args(["--model", "tiny-math", "--protocol", "ttrl"])
    assert (cfg.dataset, cfg.lr, cfg.max_new_tokens, cfg.rollouts) == ("tiny-math", 1e-4, 12, 64)


@pytest.mark.parametrize("name, temperature", [("Qwen/Qwen2.5-Math-1.5B", 1.0),
                                               ("/models/qwen2.5-math-7b", 1.0),
                                               ("Qwen/Qwen2.5-7B", 0.6),
                                               ("meta-llama/Llama-3.1-8B-Instruct", 0.6)])
def test_the_ttrl_temperature_is_the_text_family_s(name, temperature):
    model = SimpleNamespace(config=SimpleNamespace(model_type="qwen2", name_or_path=name))
    assert families.ttrl_temperature(model) == temperature


# ----------------------------------------------------------------------------- how answers are read

def test_official_protocol_reads_letters_with_the_official_reader():
    import data
    import ttrv
    question = data.Example("x", "q", ["cat", "dog", "eel", "fox"], "B", None, None)
    texts = ["The answer is B, not D.", "a golf course", "golf course.", "golf course"]
    paper, official = parse_args([]), parse_args(["--protocol", "official"])
    assert (paper.answer_reader, official.answer_reader) == ("paper", "official")
    assert keys(texts, question, official)[:2] == ["D", "A"]
    assert len(set(keys(texts, question, official))) == 3    # trimmed texts pool
    assert keys(texts, question, paper)[:2][0] == "B"
    explicit = parse_args(["--protocol", "official", "--answer-reader", "paper"])
    assert keys(texts, question, explicit)[0] == "B"


def test_ttrl_protocol_rewards_by_majority_as_ttrl_unless_told_otherwise():
    import data
    import ttrv
    model = ["--model", "Qwen/Qwen2.5-Math-1.5B"]
    cfg = parse_args(["--protocol", "ttrl"] + model)
    assert (cfg.reward, cfg.majority_match) == ("majority", "grade")
    assert parse_args(["--protocol", "ttrl", "--reward", "ttrv"] + model).reward == "ttrv"
    assert parse_args(["--protocol", "ttrl", "--majority-match", "key"] + model
                      ).majority_match == "key"
    assert (parse_args([]).reward, parse_args([]).majority_match) == ("ttrv", "key")
    q = data.Example("m", "q", [], "7", None, None)
    texts = ["\\boxed{y=2x+1}", "\\boxed{y = 2x + 1}", "\\boxed{2x+1=y}", "\\boxed{5}"]
    r, _, _ = ttrv.score(texts, q, cfg, None)
    assert r.tolist() == [1, 1, 1, 0]                  # 2x+1=y grades equal to the winner
    r, _, _ = ttrv.score(texts, q, parse_args(["--protocol", "ttrl", "--majority-match", "key"]
                                              + model), None)
    assert r.tolist() == [1, 1, 0, 0]


def keys(texts, question, cfg):
    """The keys ttrv.score votes with under `cfg`."""
    import answers
    return answers.vote_keys(texts, question, no_answer=cfg.no_answer, reader=cfg.answer_reader)
