"""Run by tests/test_processes.py as rank RANK of 2 (gloo, no model): every call of the processes
contract (harness/processes.py Ranks, harness/distributed.py) on small made-up inputs, each
answer (or the error it raised, as (type name, message)) saved for the test to check.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/dist_processes_worker.py OUT
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import data  # noqa: E402
import rollout  # noqa: E402
from harness import distributed, processes  # noqa: E402


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001  (the test reads which error, on which rank)
        return ("error", type(e).__name__, str(e))


def main(out):
    assert distributed.init("cpu")
    procs, r = processes.Ranks(), distributed.rank()
    got = dict(rank=r, count=procs.count)
    got["share"] = distributed.share([10, 11, 12])
    got["updates"] = procs.updates([0, 1, 2], 2)
    got["contiguous"] = procs.share(list(range(5)))
    got["gathered"] = distributed.gather_share(procs.share(list(range(5))), 5)
    got["sum"] = procs.sum(r + 1.0)
    got["any_one"] = procs.any_alive(torch.tensor([False, r == 1]))
    got["any_none"] = procs.any_alive(torch.tensor([False, False]))
    got["mean"] = procs.mean({"reward": (3.0, 3) if r == 0 else (5.0, 1),     # 8 / 4 = 2
                              "only_rank0": (2.0, 2) if r == 0 else (0.0, 0),  # 2 / 2 = 1
                              "none": (0.0, 0)})
    T = 2 if r == 0 else 4                       # rank 1's rollouts are longer
    roll = rollout.Rollouts(torch.full((3, T), 7), torch.full((3, T), -0.5),
                            torch.ones(3, T, dtype=torch.long), {"entropy": torch.full((3, T), 0.25)})
    got["same_length"] = procs.same_length(roll, 99)

    def fails_on_rank1(kind):
        if r == 1:
            raise kind("Cannot read image x.png; replace it.")
        return "fine"
    got["checked_ok"] = outcome(procs.checked, lambda: f"rank {r} ok")
    got["checked_data"] = outcome(procs.checked, fails_on_rank1, data.DataError)
    got["checked_other"] = outcome(procs.checked, fails_on_rank1, ValueError)
    got["on_main_ok"] = outcome(procs.on_main, lambda: f"computed on rank {r}")

    def fails_on_main():
        raise data.DataError("the main rank failed")
    got["on_main_error"] = outcome(procs.on_main, fails_on_main)
    if r == 1:
        procs.publish_error("planted fault")
    torch.distributed.barrier()
    got["peer_error"] = procs.peer_error()
    torch.distributed.barrier()
    torch.save(got, f"{out}.rank{r}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
