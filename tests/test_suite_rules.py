"""The suite's own rules: ../shared is found beside the repository and its absence fails under
CI=true; no test reads an absolute path, skips for root, or times the wall clock."""

import re
from pathlib import Path

import pytest

import conftest

TESTS = Path(__file__).resolve().parent


def test_shared_path_skips_without_shared_and_fails_under_ci(tmp_path, monkeypatch):
    monkeypatch.setattr(conftest, "SHARED", tmp_path / "shared")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="paper-notes.md is absent"):
        conftest.shared_path("paper-notes.md")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true needs it"):
        conftest.shared_path("paper-notes.md")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "paper-notes.md").write_text("notes")
    assert conftest.shared_path("paper-notes.md").read_text() == "notes"


def test_shared_is_the_folder_beside_the_repository():
    assert conftest.SHARED == TESTS.parent.parent / "shared"


@pytest.mark.parametrize("path", sorted(TESTS.glob("*.py")), ids=lambda p: p.name)
def test_no_absolute_paths_root_skips_or_wall_clock_asserts(path):
    if path.name == Path(__file__).name:
        return
    source = path.read_text()
    for pattern, why in [(r"['\"]/(work|home|root|Users)/", "an absolute path"),
                         (r"geteuid", "a skip that depends on the user"),
                         (r"perf_counter|time\.time\(|monotonic\(", "a wall-clock measurement")]:
        assert not re.search(pattern, source), f"{path.name} has {why}"
