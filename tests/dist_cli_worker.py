"""Run by tests/test_distributed.py under torchrun: ttrv.py's command line with a fault planted
on rank 1 only (the other ranks are untouched).

    FAULT=data  python -m torch.distributed.run --nproc-per-node 2 tests/dist_cli_worker.py ARGS
    FAULT=model ...

data: rank 1 cannot prepare its rollout prompts (a DataError, as a corrupt image gives);
model: rank 1's reference log-probs raise a RuntimeError in the middle of the step, while
rank 0 waits in that forward's all-gather.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
import shared_prefix  # noqa: E402
import ttrv  # noqa: E402
from harness import cli  # noqa: E402


def fail(error):
    def raises(*a, **k):
        raise error
    return raises


if os.environ.get("RANK") == "1":
    if os.environ["FAULT"] == "data":
        ttrv.prompts_of = fail(data.DataError("Cannot read image x.png; replace it."))
    else:
        shared_prefix.logprobs = fail(RuntimeError("planted fault in the model step"))

if __name__ == "__main__":
    raise SystemExit(cli.command(cli.main))
