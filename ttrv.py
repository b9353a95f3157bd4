"""TTRV: test-time reinforcement learning for a vision-language model, the algorithm.

    python ttrv.py                                              # tiny offline model on shapes
    python ttrv.py --model Qwen/Qwen2.5-VL-3B --dataset resisc45   # the paper's setting, 1 GPU

Per batch of unlabeled prompts: N responses each from the current policy (rollout.py), rewards
from their vote (eq. 3-7: answers.py, rewards.py), group advantages (eq. 2), one AdamW update per
prompt on the clipped-ratio loss with a KL penalty to a frozen reference (eq. 1, grpo.py). The
run (data, models, precision, evaluation, files, torchrun) is harness/run.py's; departures: README.
"""
if __name__ == "__main__":           # the command line is the harness's (flags before torch)
    from harness import cli
    raise SystemExit(cli.command(cli.main))

import random
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

import answers
import grpo
import rewards
import rollout
import shared_prefix
import vlm
from processes import ONE            # one process; torchrun: harness/processes.py's Ranks


@dataclass(frozen=True)
class Settings:
    """The hyperparameters, the paper's values as defaults (Section 4, Appendix A). harness/
    config.py's Config holds every flag with its --help and fills this record (harness/run.py)."""
    # rollouts
    rollouts: int = 32               # N responses per prompt: the votes of eq. (3)
    train_rollouts: int = None       # k of them trained (None: all N; official code: 16 of 32)
    temperature: float = 1.0         # responses drawn from pi_theta / T, scored the same way
    top_p: float = 1.0
    max_new_tokens: int = 1024
    prompts_per_step: int = 4        # prompts drawn together (ours; official: one per GPU)
    # rewards (eq. 3-7) and advantages (eq. 2)
    reward: str = "ttrv"             # eq. (7): frequency (eq. 4) + alpha * diversity (eq. 6)
    alpha: float = 0.75              # eq. (7)
    entropy: str = "raw"             # eq. (5); "normalized": the official code's
    no_answer: str = "own"           # an unparseable response votes alone (ours; official: text)
    answer_reader: str = "paper"     # how letters are read (ours; official: answers.py's reader)
    majority_match: str = "key"      # --reward majority: same key (ours) or grade (TTRL's rule)
    dare_alpha: float = 0.5          # DARE's exploration bonus (ours; unpublished)
    dare_tau: float = 0.05           # DARE's pruning threshold (ours; unpublished)
    baseline: str = "group"          # eq. (2): A = (r - mean) / std over the prompt's group
    adv_ddof: int = 0                # eq. (2)'s std: population; 1 the official torch.std
    # the update (eq. 1)
    lr: float = 5e-7                 # AdamW peak, cosine schedule
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    beta: float = 0.001              # KL coefficient, k3 estimator
    clip_eps: float = 0.2            # ratio clip
    dual_clip: float = 3.0           # dual clip for negative advantages (verl)
    loss_agg: str = "token_mean"
    max_grad_norm: float = 1.0
    epochs: int = 2
    prompts_per_update: int = None   # prompts per AdamW update (None: 1; torchrun: 1 a process)
    # this run (not the method's)
    micro_batch: int = None          # rows per forward/backward chunk: memory, same gradient
    seed: int = 0
    quiet: bool = False


@dataclass(frozen=True)
class Setup:
    """What stays the same during adaptation (harness/run.py builds it)."""
    policy: torch.nn.Module          # pi_theta, trained
    ref_model: torch.nn.Module       # pi_ref of eq. (1), frozen (LoRA: the policy, adapters off)
    processor: object                # prompts in, texts out (vlm.py)
    autocast: object                 # the precision context: bf16 autocast, or off
    sampler: object = shared_prefix  # sample(), logprobs(): shared_prefix.py; plain: rollout.py
    procs: object = ONE              # the processes (processes.py)


# ------------------------------------------------------------------------------- the vote

def score(texts, example, hp, rng, entropies=None):
    """One prompt's N responses -> (rewards [N], answer entropy, majority share). The question's
    kind decides what votes (answers.py): option letters, a number, a \\boxed{} answer."""
    keys = answers.vote_keys(texts, example, no_answer=hp.no_answer, reader=hp.answer_reader)
    same = (answers.grade_match(texts, example, hp.answer_reader)      # TTRL's rule: graded equal
            if hp.majority_match == "grade" else None)
    r = rewards.compute_rewards(hp.reward, keys, alpha=hp.alpha,               # eq. (3)-(7)
                                normalized_entropy=hp.entropy == "normalized",
                                token_entropies=entropies, rng=rng, dare_alpha=hp.dare_alpha,
                                dare_tau=hp.dare_tau, match=hp.majority_match, same=same)
    dist = rewards.empirical_distribution(keys)
    return r, rewards.entropy(dist), max(dist.values())


def sampling_options(s, hp):
    """The sampler's settings: the tempered full distribution, the family's end tokens."""
    return dict(temperature=hp.temperature, top_p=hp.top_p, max_new_tokens=hp.max_new_tokens,
                eos_token_ids=vlm.end_token_ids(s.policy, s.processor),
                pad_token_id=vlm.pad_token_id(s.processor),
                suppress_token_ids=vlm.placeholder_token_ids(s.policy), any_alive=s.procs.any_alive)


def prompts_of(processor, batch, device):
    return vlm.to_device(vlm.example_inputs(processor, batch), device)


# ------------------------------------------------------------------------------- one batch

def collect(s, batch, weights, hp, rng):
    """Rollouts, rewards from the vote and advantages (eq. 2) for one batch of prompts.

    Returns one rollout.Experience per prompt (its k trained responses, the sampler's log-probs
    as the old policy's) and the vote's figures per prompt (reward, answer entropy, ...)."""
    options, stat = sampling_options(s, hp), rewards.TOKEN_STAT.get(hp.reward)  # stat: per token
    inputs = s.procs.checked(prompts_of, s.processor, batch, next(s.policy.parameters()).device)
    with s.autocast, s.procs.gathered(s.policy):      # 1. rollouts from the current policy
        roll = s.procs.same_length(s.sampler.sample(s.policy, inputs, hp.rollouts, **options,
                                                    stats=(stat,) if stat else ()),
                                   options["pad_token_id"])                    # [B*N, T]
    n, k = hp.rollouts, hp.train_rollouts or hp.rollouts   # votes; trained responses
    texts, mask = vlm.decode(s.processor, roll.completion_ids), roll.mask.float()  # [B*N, T]
    token_entropy = stat and (                       # DARE's u: mean over the response's tokens
        (roll.stats[stat] * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()   # [B*N]
    scored = [score(texts[b * n:(b + 1) * n], e, hp, rng,                      # 2. rewards
                    token_entropy and token_entropy[b * n:(b + 1) * n])
              for b, e in enumerate(batch)]
    r = torch.tensor(np.stack([x[0] for x in scored]), dtype=torch.float32)    # [B, N]
    # 3. advantages (eq. 2) over the k trained responses; the frequencies used all n votes
    advantages = grpo.group_advantages(r[:, :k], baseline=hp.baseline, ddof=hp.adv_ddof)
    groups = [experience(s, rollout.Experience(
                  prompt, roll.completion_ids[b * n:b * n + k], mask[b * n:b * n + k],
                  roll.logprobs[b * n:b * n + k], None, advantages[b], weights[b]), hp)
              for b, prompt in enumerate(vlm.split_inputs(inputs))]
    figures = [dict(reward=float(x[0].mean()), answer_entropy=x[1], majority_share=x[2],
                    adv_abs=float(advantages[b].abs().mean()),                 # mean |A|
                    adv_nonzero_share=float((advantages[b] != 0).any()),       # it can learn
                    response_tokens=float(mask[b * n:(b + 1) * n].sum(1).mean()))
               for b, x in enumerate(scored)]
    return groups, figures


def experience(s, g, hp):
    """Group `g` (a rollout.Experience) ready for the update: rows longest first, its frozen
    reference log-probs (eq. 1) computed once, in the micro-batches `backward` will use."""
    order = grpo.by_length(g.mask)                     # micro-batches of like lengths
    g = replace(g, ids=g.ids[order], mask=g.mask[order], old_logp=g.old_logp[order].float(),
                advantages=g.advantages[order].to(g.mask.device))
    if hp.beta:
        ref = torch.zeros_like(g.mask)                                             # [k, T]
        with torch.no_grad(), s.autocast:
            for rows, T in grpo.length_chunks(g.mask, hp.micro_batch):
                ref[rows, :T] = s.sampler.logprobs(s.ref_model, g.prompt, g.ids[rows, :T],
                                                   g.mask[rows, :T], hp.temperature).float()
        g = replace(g, ref_logp=ref)
    return g


def backward(s, g, hp, total, scale):
    """Loss (eq. 1) and backward for one group, in micro-batches of hp.micro_batch rows, each cut
    to its own longest row. Each chunk weighs its share of `total` (tokens for token_mean, else
    rows, over the update's groups), so the gradient is that of all groups at once; `scale`
    multiplies the loss (0 for a stand-in). Returns the loss statistics."""
    stats = []
    for rows, T in grpo.length_chunks(g.mask, hp.micro_batch):
        part = (rows, slice(0, T))                     # the columns past T are padding here
        with s.autocast:
            logp = s.sampler.logprobs(s.policy, g.prompt, g.ids[part], g.mask[part],
                                      hp.temperature)
        loss, st = grpo.grpo_loss(logp.float(), g.old_logp[part],
                                  None if g.ref_logp is None else g.ref_logp[part],
                                  g.advantages[rows], g.mask[part], clip_eps=hp.clip_eps,
                                  beta=hp.beta, dual_clip=hp.dual_clip,
                                  aggregation=hp.loss_agg, max_len=g.ids.shape[1])  # group's T
        share = (g.mask[part].sum() / total if hp.loss_agg == "token_mean"
                 else torch.tensor(g.ids[part].shape[0] / total))
        (loss * share * scale).backward()
        stats.append((float(share), st))
    weight = sum(w for w, _ in stats)      # this group's share of the update
    out = {key: sum(w * st[key] for w, st in stats) / weight for key in stats[0][1]}
    out.update({key: max(st[key] for _, st in stats) for key in ("ratio_max", "ratio_dev")})
    return out


def update(s, optimizer, groups, hp):
    """One AdamW update over `groups` (this process's share): the token (or row) mean loss over
    every process's groups; FSDP averages K processes' gradients, so each loss is scaled by K."""
    def size(g):
        return float(g.mask.sum()) if hp.loss_agg == "token_mean" else g.mask.shape[0]
    total = s.procs.sum(sum(size(g) * g.weight for g in groups))
    stats = [backward(s, g, hp, total, s.procs.count * g.weight) for g in groups]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = grpo.clip_grad_norm(params, hp.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return stats, grad_norm


# ------------------------------------------------------------------------------- adaptation

def schedule(n_examples, hp):
    """Batches of example indices: every example once per epoch, in a fresh seeded order."""
    order, batches = random.Random(hp.seed), []
    for _ in range(hp.epochs):
        idx = order.sample(range(n_examples), n_examples)
        size = hp.prompts_per_step
        batches += [idx[i:i + size] for i in range(0, n_examples, size)]
    return batches


def step_metrics(figures, stats, weights, procs):
    """Each vote figure and loss statistic: a mean over every process's prompts (stand-ins: 0)."""
    return procs.mean({key: (sum(x[key] * w for x, w in zip(part, weights)), sum(weights))
                       for part in (figures, stats) for key in part[0]})


def adapt(s, examples, hp, on_step=None):
    """Test-time RL on unlabeled `examples`: one metrics dict per batch of prompts, each also
    passed to `on_step`. Besides rewards and loss statistics: `adv_abs`, the mean |A|, and
    `adv_nonzero_share`, the share of prompts whose advantages are not all 0 (equal rewards give
    A = 0: nothing to learn). Labels are never read (tests/test_ttrv.py checks it)."""
    params = [p for p in s.policy.parameters() if p.requires_grad]
    optimizer = grpo.adamw(params, hp.lr, hp.weight_decay)    # fused when all on CUDA
    torch.manual_seed(hp.seed + s.procs.rank)          # rollouts: torch's global generator
    reward_rng = np.random.default_rng(hp.seed)
    batches, history, updates = schedule(len(examples), hp), [], 0
    for step, idx in enumerate(tqdm(batches, desc="adapt", disable=hp.quiet)):
        t0 = time.time()
        parts = s.procs.updates(idx, hp.prompts_per_update or s.procs.count)
        mine = [i for part in parts for i in part]     # None: a stand-in keeping processes in step
        batch = [examples[idx[0] if i is None else i] for i in mine]
        weights = [float(i is not None) for i in mine]
        groups, figures = collect(s, batch, weights, hp, reward_rng)          # steps 1-3
        # verl steps its scheduler once per batch of prompts (fsdp_workers.py:553): lr constant
        # within a batch; warmup int(0.03 * batches) = 0 on short runs, so batch 1 is at the peak.
        lr = grpo.cosine_lr(step, len(batches), hp.lr, hp.warmup_ratio)
        grpo.set_lr(optimizer, lr)
        stats, norms, b = [], [], 0
        for part in parts:                     # 4. one AdamW update per `per_update` prompts
            st, norm = update(s, optimizer, groups[b:b + len(part)], hp)
            stats, norms, b, updates = stats + st, norms + [norm], b + len(part), updates + 1
        m = dict(step=step + 1, updates=updates, **step_metrics(figures, stats, weights, s.procs))
        m.update(grad_norm=sum(norms) / len(norms), lr=lr, seconds=time.time() - t0)
        history.append(m)
        if on_step:
            on_step(m)
    return history

