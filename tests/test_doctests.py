"""The docstring examples of every module run, and importing a module does nothing else.

Modules are found by globbing the repository (every .py outside tests/ and hidden folders), so
the test keeps covering them when they move into a folder: a/b.py is imported as a.b.
"""

import doctest
import importlib
import importlib.util
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_names():
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] == "tests" or any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = module_names()


def test_the_modules_are_found():
    assert {"ttrv", "grpo", "rewards", "rollout", "harness.cli"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy, submodules
@pytest.mark.parametrize("name", MODULES)
def test_importing_a_module_prints_writes_and_parses_nothing(name, tmp_path, monkeypatch, capfd):
    """The module's code run afresh (runpy, under another __name__; sys.modules as before after) from
    an empty directory, with an argv no parser accepts: no output, no file, no exit."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x", "--no-such-flag"])
    if importlib.util.find_spec(name).submodule_search_locations:       # a package: its __init__
        runpy.run_path(str(ROOT.joinpath(*name.split("."), "__init__.py")), run_name="__import_check__")
    else:
        runpy.run_module(name, run_name="__import_check__", alter_sys=True)   # restored after
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out + err)[-2000:]
    assert list(tmp_path.iterdir()) == []
