"""Run the experiments of docs/teaching-grpo.md: its ```python blocks, from the repository root.

    python docs/teaching.py         # every experiment, in order
    python docs/teaching.py 3       # experiment 3 only
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "teaching-grpo.md"


def blocks(page=PAGE) -> list[str]:
    """The page's ```python blocks, in order: block k is experiment k."""
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.S | re.M)


def run(k: int) -> None:
    """Run experiment k (1-based) as a script of its own, the repository on the import path."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    code = blocks()[k - 1]
    exec(compile(code, f"{PAGE.name}, experiment {k}", "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    chosen = [int(a) for a in sys.argv[1:]] or range(1, len(blocks()) + 1)
    for k in chosen:
        print(f"--- experiment {k}")
        run(k)
