"""Run by tests/test_distributed.py under torchrun (2 processes, gloo, FSDP2): the rollouts of
the same prompts sampled twice, with FSDP's default gathering (every block re-gathered at every
forward, so at every generated token) and inside procs.gathered (each block gathered once).

    python -m torch.distributed.run --nproc-per-node 2 tests/dist_sample_worker.py MODEL_DIR OUT.pt

Rank 0 saves both rollouts' tokens, the number of FSDP all-gathers each made (counted at
FSDP's own foreach_all_gather), the number of FSDP parameter groups, and whether every
parameter is sharded again afterwards.
"""
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.distributed.fsdp import FSDPModule  # noqa: E402
from torch.distributed.fsdp._fully_shard import _fsdp_param_group  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

import shared_prefix  # noqa: E402
import ttrv  # noqa: E402
from harness import distributed, presets, processes  # noqa: E402
from harness.config import Config  # noqa: E402
from harness.run import load_models  # noqa: E402


def main(model_dir, out):
    procs = processes.Ranks() if distributed.init("cpu") else processes.ONE
    cfg = Config(model=model_dir, device="cpu", precision="fp32", rollouts=3, max_new_tokens=5)
    setup, _ = load_models(cfg, log=lambda *a: None, procs=procs)
    policy, processor = setup.policy, setup.processor
    examples = presets.load_dataset("shapes", "test")[2 * procs.rank:2 * procs.rank + 2]
    inputs = ttrv.prompts_of(processor, examples, "cpu")
    options = ttrv.sampling_options(setup, cfg)
    count, real = [0], _fsdp_param_group.foreach_all_gather

    def counting(*a, **k):
        count[0] += 1
        return real(*a, **k)
    _fsdp_param_group.foreach_all_gather = counting
    result = {}
    for name, context in (("per_forward", contextlib.nullcontext), ("gathered", procs.gathered)):
        torch.manual_seed(0)
        count[0] = 0
        with context(policy):
            ids = shared_prefix.sample(policy, inputs, cfg.rollouts, **options).completion_ids
        result[name] = dict(ids=ids, gathers=count[0])
        result[name + "_sharded_after"] = all(isinstance(p, DTensor) for p in policy.parameters())
    result["groups"] = sum(bool(m._get_fsdp_state()._fsdp_param_groups)
                           for m in policy.modules() if isinstance(m, FSDPModule))
    if distributed.is_main():
        torch.save(result, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
