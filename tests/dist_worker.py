"""Run by tests/test_distributed.py, alone or under torchrun: one AdamW update on fixed rollouts.

    python tests/dist_worker.py MODEL_DIR OUT.pt            # one process, both prompts
    python -m torch.distributed.run --nproc-per-node 2 tests/dist_worker.py MODEL_DIR OUT.pt

Two prompts with 4 fixed completions each (the same on every rank), advantages fixed; one
update with prompts_per_update = 2 through ttrv.update: one process takes both groups,
two processes (FSDP2, gloo) one each. Rank 0 saves the full gradients just before the AdamW
step, the full parameters after it, and the loss statistics.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness import presets  # noqa: E402
from harness import distributed  # noqa: E402
import rollout  # noqa: E402
import ttrv  # noqa: E402
import vlm  # noqa: E402
from harness.config import Config  # noqa: E402


def full(t):
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def main(model_dir, out):
    procs = distributed.Ranks() if distributed.init("cpu") else distributed.ONE
    torch.manual_seed(0)
    cfg = Config(model=model_dir, device="cpu", precision="fp32", rollouts=4, lr=1e-3,
                 prompts_per_update=2, max_grad_norm=1e9, beta=0.01)
    policy, ref, processor, autocast, _ = ttrv.load_models(cfg, log=lambda *a: None, procs=procs)
    examples = presets.load_dataset("shapes", "test")[:2]
    prompts = vlm.split_inputs(vlm.prompt_inputs(processor, [e.image() for e in examples],
                                                 [e.question for e in examples]))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 200, (2, 4, 3), generator=g)               # [prompt, n, T]
    mask = torch.ones(2, 4, 3)
    mask[0, 1, 2] = mask[1, 3, 1:] = 0                                  # different token counts
    advantages, noise = torch.randn(2, 4, generator=g), 0.01 * torch.randn(2, 4, 3, generator=g)
    groups = []
    for j in procs.updates([0, 1], 2)[0]:                               # this rank's prompts
        with torch.no_grad():
            old = rollout.logprobs(policy, prompts[j], ids[j], mask[j])
            ref_logp = rollout.logprobs(ref, prompts[j], ids[j], mask[j])
        groups.append(rollout.Experience(prompts[j], ids[j], mask[j], old + noise[j], ref_logp,
                                         advantages[j]))
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    grads, step = {}, optimizer.step

    def recording_step(*a, **kw):
        grads.update({n: full(p.grad) for n, p in policy.named_parameters() if p.grad is not None})
        return step(*a, **kw)
    optimizer.step = recording_step
    stats, grad_norm = ttrv.update(policy, optimizer, params, groups, cfg, autocast, rollout, procs)
    weights = {n: full(p) for n, p in policy.named_parameters()}
    if distributed.is_main():
        torch.save(dict(grads=grads, weights=weights, stats=dict(grad_norm=grad_norm)), out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
