"""--protocol official sets every Config field of the protocol table (docs/protocols.md); flags still win."""

import re
from pathlib import Path

from types import SimpleNamespace

import pytest

import vlm
from harness.config import OFFICIAL, Config, parse_args

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
        if name == "temperature":     # per family, filled by vlm.official_temperature in ttrv.run
            assert official.temperature is None and paper.temperature == 1.0
            continue
        if name == "protocol":
            assert (paper.protocol, official.protocol) == ("paper", "official")
            continue
        assert str(getattr(paper, name)) == paper_cell.strip("`"), name
        assert str(getattr(official, name)) == official_cell.split()[0].strip("`"), name
    assert {r[0].split("`")[1] for r in rows} >= set(OFFICIAL)


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
    assert vlm.official_temperature(model) == temperature
