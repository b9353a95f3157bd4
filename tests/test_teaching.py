"""docs/teaching-grpo.md stays true: every experiment runs as written (docs/teaching.py), and
every test it names as the one that breaks with the idea still exists."""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import teaching  # noqa: E402

PAGE = (ROOT / "docs" / "teaching-grpo.md").read_text()


def test_the_page_has_its_experiments():
    assert len(teaching.blocks()) >= 5
    assert len(re.findall(r"^## \d+\. ", PAGE, flags=re.M)) == len(teaching.blocks())


@pytest.mark.parametrize("k", range(1, len(teaching.blocks()) + 1))
def test_experiment_runs_as_written(k, capsys):
    teaching.run(k)
    assert capsys.readouterr().out.strip()            # it shows something


def test_each_experiment_names_tests_that_exist():
    sections = re.split(r"^## \d+\. ", PAGE, flags=re.M)[1:]
    for section in sections:
        named = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", section)
        assert named, f"an experiment names no test: {section[:60]!r}"
        for path, name in named:
            source = (ROOT / path).read_text()
            assert re.search(rf"^def {name}\(", source, flags=re.M), f"{path}::{name} is gone"
