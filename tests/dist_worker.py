"""Run by tests/test_distributed.py, alone or under torchrun: updates on fixed rollouts.

    python tests/dist_worker.py MODEL_DIR OUT_PREFIX        # one process
    python -m torch.distributed.run --nproc-per-node 2 tests/dist_worker.py MODEL_DIR OUT_PREFIX

(1) `one_update`: two prompts with 4 fixed completions each (the same on every rank),
advantages fixed; one update with prompts_per_update = 2 through ttrv.update: one process
takes both groups, two processes (FSDP2, gloo) one each. It keeps the full gradients just before
the AdamW step, the full parameters after it, and the loss statistics.
(2) `adapt_with_stand_ins`: ttrv.adapt itself on 4 prompts, 3 per step (steps of 3 prompts and
1), with a sampler that returns fixed completions per prompt (option letters that disagree, so
the advantages are not 0): under 2 processes rank 1 holds a zero-weight stand-in in the second
update of step 1 and only a stand-in in step 2. It keeps the per-step metrics and the weights.
Every rank saves OUT_PREFIX.rank<r>.pt.
"""
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dataclasses  # noqa: E402

import torch  # noqa: E402

import grpo  # noqa: E402
import rollout  # noqa: E402
import shared_prefix  # noqa: E402
import ttrv  # noqa: E402
import vlm  # noqa: E402
from harness import distributed, presets, processes  # noqa: E402
from harness.config import Config  # noqa: E402
from harness.run import load_models  # noqa: E402

PROCS = None   # processes.Ranks() under torchrun, else processes.ONE (set in main)


def full(t):
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def one_update(model_dir):
    torch.manual_seed(0)
    cfg = Config(model=model_dir, device="cpu", precision="fp32", rollouts=4, lr=1e-3,
                 prompts_per_update=2, max_grad_norm=1e9, beta=0.01)
    setup, _ = load_models(cfg, log=lambda *a: None, procs=PROCS)
    policy, processor = setup.policy, setup.processor
    examples = presets.load_dataset("shapes", "test")[:2]
    prompts = vlm.split_inputs(vlm.prompt_inputs(processor, [e.image() for e in examples],
                                                 [e.question for e in examples]))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 200, (2, 4, 3), generator=g)               # [prompt, n, T]
    mask = torch.ones(2, 4, 3)
    mask[0, 1, 2] = mask[1, 3, 1:] = 0                                  # different token counts
    advantages, noise = torch.randn(2, 4, generator=g), 0.01 * torch.randn(2, 4, 3, generator=g)
    groups = []
    for j in PROCS.updates([0, 1], 2)[0]:                               # this rank's prompts
        with torch.no_grad():
            old = shared_prefix.logprobs(policy, prompts[j], ids[j], mask[j])
        groups.append(ttrv.experience(setup, rollout.Experience(
            prompts[j], ids[j], mask[j], old + noise[j], None, advantages[j]), cfg))
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    grads, step = {}, optimizer.step

    def recording_step(*a, **kw):
        grads.update({n: full(p.grad) for n, p in policy.named_parameters() if p.grad is not None})
        return step(*a, **kw)
    optimizer.step = recording_step
    per_group, grad_norm = ttrv.update(setup, optimizer, groups, cfg)
    stats = PROCS.mean({key: (sum(s[key] * g.weight for s, g in zip(per_group, groups)),
                              sum(g.weight for g in groups)) for key in per_group[0]})
    stats["grad_norm"] = grad_norm
    weights = {n: full(p) for n, p in policy.named_parameters()}
    return dict(grads=grads, weights=weights, stats=stats)


# each prompt's 4 completions: 0 and 1 disagree (A != 0), 2 has an unparseable answer and other
# lengths, 3 is a four-way tie (the ttrv reward equal in the group: A = 0)
COMPLETIONS = [["A", "A", "B", "A"], ["B", "C", "B", "D"], ["D", "D", "no idea at all", "C"],
               ["A", "B", "C", "D"]]


def adapt_with_stand_ins(model_dir):
    torch.manual_seed(0)
    cfg = Config(model=model_dir, device="cpu", precision="fp32", rollouts=4, lr=1e-3,
                 prompts_per_step=3, prompts_per_update=2, epochs=1, beta=0.01,
                 weight_decay=0.0, quiet=True)
    setup, _ = load_models(cfg, log=lambda *a: None, procs=PROCS)
    policy, processor = setup.policy, setup.processor
    examples = [dataclasses.replace(e, question=f"Question {i}. {e.question}")
                for i, e in enumerate(presets.load_dataset("shapes", "test")[:4])]
    tok = processor.tokenizer

    def fixed_sample(policy, inputs, n, *, eos_token_ids, pad_token_id, **_):
        """COMPLETIONS of each prompt (found by its question) with the policy's log-probs."""
        end_ids, pad_id = eos_token_ids, pad_token_id
        prompts, texts = vlm.split_inputs(inputs), tok.batch_decode(inputs["input_ids"])
        found = [next(i for i in range(4) if f"Question {i}." in t) for t in texts]
        rows = [tok(c + tok.eos_token, add_special_tokens=False)["input_ids"]
                for i in found for c in COMPLETIONS[i]]
        T = max(map(len, rows))
        ids = torch.tensor([r + [pad_id] * (T - len(r)) for r in rows])          # [B*n, T]
        mask = grpo.completion_mask(ids, end_ids).long()                          # [B*n, T]
        with torch.no_grad():
            logp = torch.cat([shared_prefix.logprobs(
                policy, one, ids[b * 4:(b + 1) * 4], mask[b * 4:(b + 1) * 4], cfg.temperature)
                for b, one in enumerate(prompts)])                                # [B*n, T]
        return rollout.Rollouts(ids, logp, mask)
    fixed = types.SimpleNamespace(sample=fixed_sample, logprobs=shared_prefix.logprobs)
    history = ttrv.adapt(dataclasses.replace(setup, sampler=fixed, procs=PROCS), examples, cfg)
    weights = {n: full(p) for n, p in policy.named_parameters()}
    return dict(history=history, weights=weights)


def main(model_dir, out):
    global PROCS
    PROCS = processes.Ranks() if distributed.init("cpu") else processes.ONE
    results = dict(one_update=one_update(model_dir),
                   adapt_with_stand_ins=adapt_with_stand_ins(model_dir))
    torch.save(results, f"{out}.rank{distributed.rank()}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:3])
