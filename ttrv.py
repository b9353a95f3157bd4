"""TTRV: test-time reinforcement learning for a vision-language model, top to bottom.

    python ttrv.py                                              # tiny offline model on shapes
    python ttrv.py --model Qwen/Qwen2.5-VL-3B --dataset resisc45   # the paper's setting, 1 GPU

1. Draw 20 unlabeled examples from the test set (labels are stripped before anything sees them).
2. Evaluate the base model greedily on the whole test set.
3. For each batch of prompts: sample N = 32 responses per prompt from the current policy, extract
   the answers, score them with the self-consistency reward (eq. 3-7), turn the rewards into
   group advantages (eq. 2), then make one AdamW update per prompt with the clipped-ratio loss
   and a KL penalty to a frozen reference copy (eq. 1). Two epochs.
4. Evaluate the adapted model the same way; write everything to the run directory.

Where this departs from the paper / official code (each also said where it happens):
- Prompts per batch: 4 (the official code: one per GPU, 4 in the 2B/Qwen logs, 8 for InternVL3-8B).
- All N = 32 responses vote and are trained on, as the paper says; the official code trains on
  16 of its 32 votes (--votes 32 --train-rollouts 16).
- Unparseable responses are each an answer of their own (--no-answer; official: their text).
- Each prompt is encoded once per group (rollout.py), the same maths as N copies.
- Mixed precision: fp32 master weights with bf16 autocast (verl's FSDP also keeps fp32 masters);
  the reference computes the same way (prepare). --lora-rank trains PEFT adapters (ours).
- --protocol official sets the official runs' settings (docs/protocols.md).
- torchrun (harness/distributed.py): one AdamW update per K prompts, one per process, as the
  official code; --prompts-per-update K gives the same update in one process.
- The tiny model's presets (lr, lengths) differ from the paper's; see harness/config.py.
- Answer extraction does not read the article "a" as option A (answers.extract_choice;
  --protocol official reads letters as the official code, answers.extract_choice_official).
- Text-only models on math questions (TTRL, --protocol ttrl): the same loop; what votes is the
  question's kind (answers.py), the prompt the model's own (vlm.py).

The command line, its checks and the run directory are harness/cli.py's; `python ttrv.py ...`
hands over to it, which checks the settings before torch loads and then calls `run` here.
"""
if __name__ == "__main__":
    from harness import cli
    raise SystemExit(cli.command(cli.main))

import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import answers
import data
import eval as evaluation
import grpo
import math_answers
import rewards
import rollout
import vlm
from harness import lora, models, plain, presets, report
from harness.processes import ONE   # one process; torchrun: harness.processes.Ranks
from harness.config import TINY_MODELS, Config, bf16_compute, parse_args  # noqa: F401


# ------------------------------------------------------------------------------- the vote

def vote_keys(texts, example, cfg):
    """One prompt's N responses -> the keys they vote with (answers.vote_keys)."""
    return answers.vote_keys(texts, example, no_answer=cfg.no_answer, reader=cfg.answer_reader)


def score(texts, example, cfg, rng, entropies=None):
    """One prompt's N responses -> (rewards [N], answer entropy, majority share).

    The question's kind decides what votes (answers.py): option letters (multiple choice), the
    extracted number (counting), the canonical key of the last \\boxed{} answer (math).
    """
    keys = vote_keys(texts, example, cfg)
    r = rewards.compute_rewards(cfg.reward, keys, alpha=cfg.alpha,             # eq. (3)-(7)
                                normalized_entropy=cfg.entropy == "normalized",
                                token_entropies=entropies, rng=rng,
                                dare_alpha=cfg.dare_alpha, dare_tau=cfg.dare_tau,
                                match=cfg.majority_match,   # grade: TTRL's official rule
                                same=(answers.grade_match(texts, example, cfg.answer_reader)
                                      if cfg.majority_match == "grade" else None))
    dist = rewards.empirical_distribution(keys)
    return r, rewards.entropy(dist), max(dist.values())


def sampling_options(policy, processor, cfg, procs):
    """The sampler's settings: the tempered full distribution, the family's end tokens."""
    return dict(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                eos_token_ids=vlm.end_token_ids(policy, processor),
                pad_token_id=vlm.pad_token_id(processor),
                suppress_token_ids=vlm.placeholder_token_ids(policy), any_alive=procs.any_alive)


def prompts_of(processor, batch, device):
    return vlm.to_device(vlm.prompt_inputs(processor, [e.image() for e in batch],
                                           [e.question for e in batch]), device)


# ------------------------------------------------------------------------------- one batch

def collect(policy, ref_model, processor, batch, weights, cfg, autocast, sampler, procs, rng):
    """Steps 1-3 for one batch of prompts: rollouts, rewards from the vote, advantages (eq. 2).

    Returns one rollout.Experience per prompt (the k trained of its N responses, with the
    sampler's log-probs as the old policy's and the frozen reference's, both computed now) and
    the vote's per-prompt figures (rewards [N], answer entropy, majority share, length).
    """
    options = sampling_options(policy, processor, cfg, procs)
    inputs = procs.checked(prompts_of, processor, batch, next(policy.parameters()).device)
    with autocast, procs.gathered(policy):            # 1. rollouts from the current policy
        roll = procs.same_length(sampler.sample(policy, inputs, cfg.rollouts, **options),
                                 options["pad_token_id"])                      # [B*N, T]
    n, k = cfg.rollouts, cfg.train_rollouts or cfg.rollouts   # votes; trained responses
    texts, mask = vlm.decode(processor, roll.completion_ids), roll.mask.float()   # [B*N, T]
    # DARE's u: each response's mean token entropy, already divided by ln V (rollout.Rollouts)
    token_entropy = (None if roll.entropies is None else                          # [B*N]
                     ((roll.entropies * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist())
    scored = [score(texts[b * n:(b + 1) * n], e, cfg, rng,                     # 2. rewards
                    token_entropy and token_entropy[b * n:(b + 1) * n])
              for b, e in enumerate(batch)]
    r = torch.tensor(np.stack([s[0] for s in scored]), dtype=torch.float32)    # [B, N]
    # 3. advantages (eq. 2) over the k trained responses; the frequencies used all n votes
    advantages = grpo.group_advantages(r[:, :k], baseline=cfg.baseline, ddof=cfg.adv_ddof)
    groups = [experience(ref_model, prompt, roll.completion_ids[b * n:b * n + k],
                         mask[b * n:b * n + k], roll.logprobs[b * n:b * n + k], advantages[b],
                         weights[b], cfg, autocast, sampler)
              for b, prompt in enumerate(vlm.split_inputs(inputs))]
    figures = [dict(reward=float(x[0].mean()), answer_entropy=x[1], majority_share=x[2],
                    adv_abs=float(advantages[b].abs().mean()),                 # mean |A|
                    adv_nonzero_share=float((advantages[b] != 0).any()),       # it can learn
                    response_tokens=float(mask[b * n:(b + 1) * n].sum(1).mean()))
               for b, x in enumerate(scored)]
    return groups, figures


def experience(ref_model, prompt, ids, mask, old_logp, advantages, weight, cfg, autocast,
               sampler):
    """One prompt's rollout.Experience, rows longest first, its frozen reference log-probs
    (eq. 1) computed once, in the micro-batches `backward` will use (the same shapes)."""
    order = grpo.by_length(mask)                       # micro-batches of like lengths
    ids, mask, old_logp, advantages = ids[order], mask[order], old_logp[order], advantages[order]
    ref = None
    if cfg.beta:
        ref = torch.zeros_like(mask)                                               # [k, T]
        with torch.no_grad(), autocast:
            for rows, T in grpo.length_chunks(mask, cfg.micro_batch):
                ref[rows, :T] = sampler.logprobs(ref_model, prompt, ids[rows, :T],
                                                 mask[rows, :T], cfg.temperature).float()
    return rollout.Experience(prompt, ids, mask, old_logp.float(), ref,
                              advantages.to(mask.device), weight)


def backward(policy, g, cfg, autocast, sampler, total, scale):
    """Loss (eq. 1) and backward for one prompt's group, in micro-batches of cfg.micro_batch rows,
    each cut to its own longest row (grpo.length_chunks).

    Each chunk's loss is weighted by its share of `total` (tokens for token_mean, rows
    otherwise, over all groups of the update), so the accumulated gradient is that of all groups
    at once. `scale` multiplies the loss (0 for a stand-in). Returns the loss statistics.
    """
    stats = []
    for rows, T in grpo.length_chunks(g.mask, cfg.micro_batch):
        part = (rows, slice(0, T))                     # the columns past T are padding here
        with autocast:
            logp = sampler.logprobs(policy, g.prompt, g.ids[part], g.mask[part], cfg.temperature)
        loss, s = grpo.grpo_loss(logp.float(), g.old_logp[part],
                                 None if g.ref_logp is None else g.ref_logp[part],
                                 g.advantages[rows], g.mask[part], clip_eps=cfg.clip_eps,
                                 beta=cfg.beta, dual_clip=cfg.dual_clip,
                                 aggregation=cfg.loss_agg, max_len=g.ids.shape[1])  # group's T
        share = (g.mask[part].sum() / total if cfg.loss_agg == "token_mean"
                 else torch.tensor(g.ids[part].shape[0] / total))
        (loss * share * scale).backward()
        stats.append((float(share), s))
    weight = sum(w for w, _ in stats)      # this group's share of the update
    out = {key: sum(w * s[key] for w, s in stats) / weight for key in stats[0][1]}
    out.update({key: max(s[key] for _, s in stats) for key in ("ratio_max", "ratio_dev")})
    return out


def update(policy, optimizer, params, groups, cfg, autocast, sampler, procs=ONE):
    """One AdamW update over `groups` (this process's share of the update's prompts).

    The loss is the token mean (or row mean) over the groups of all processes: their size is
    summed over the processes. Under torchrun FSDP averages gradients over the K processes, so
    each loss is scaled by K to make that a sum; a stand-in group weighs 0.
    """
    def size(g):
        return float(g.mask.sum()) if cfg.loss_agg == "token_mean" else g.mask.shape[0]
    total = procs.sum(sum(size(g) * g.weight for g in groups))
    stats = [backward(policy, g, cfg, autocast, sampler, total, procs.count * g.weight)
             for g in groups]
    grad_norm = grpo.clip_grad_norm(params, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return stats, grad_norm


# ------------------------------------------------------------------------------- adaptation

def schedule(n_examples, cfg):
    """Batches of example indices: every example once per epoch, in a fresh seeded order."""
    order, batches = random.Random(cfg.seed), []
    for _ in range(cfg.epochs):
        idx = order.sample(range(n_examples), n_examples)
        batches += [idx[i:i + cfg.prompts_per_step] for i in range(0, n_examples, cfg.prompts_per_step)]
    return batches


def adapt(policy, ref_model, processor, examples, cfg, autocast, on_step=None, sampler=rollout,
          procs=ONE):
    """Test-time RL on unlabeled `examples` (the paper's algorithm); one metrics dict per batch
    of prompts, each also passed to `on_step` as soon as the batch is done. Besides the rewards
    and the loss statistics: `adv_abs`, the mean |A| over the trained responses, and
    `adv_nonzero_share`, the share of prompts whose advantages are not all 0 (a group of equal
    rewards has A = 0 and gives the policy-gradient term nothing to learn from).

    Labels are never read here: ttrv.run passes examples drawn by data.draw_adaptation_set,
    which strips them (tests/test_ttrv.py checks that labelled examples give the same updates).
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = grpo.adamw(params, cfg.lr, cfg.weight_decay)   # fused when all on CUDA
    torch.manual_seed(cfg.seed + procs.rank)           # rollouts: torch's global generator
    reward_rng = np.random.default_rng(cfg.seed)
    batches, history, updates = schedule(len(examples), cfg), [], 0
    for step, idx in enumerate(tqdm(batches, desc="adapt", disable=cfg.quiet)):
        t0 = time.time()
        parts = procs.updates(idx, cfg.prompts_per_update or procs.count)
        mine = [i for part in parts for i in part]     # None: a stand-in keeping processes in step
        batch = [examples[idx[0] if i is None else i] for i in mine]
        weights = [float(i is not None) for i in mine]
        groups, figures = collect(policy, ref_model, processor, batch, weights,   # steps 1-3
                                  cfg, autocast, sampler, procs, reward_rng)
        # verl steps its scheduler once per batch of prompts (fsdp_workers.py:553): lr constant
        # within a batch; warmup int(0.03 * batches) = 0 on short runs, so batch 1 is at the peak.
        lr = grpo.cosine_lr(step, len(batches), cfg.lr, cfg.warmup_ratio)
        grpo.set_lr(optimizer, lr)
        stats, norms, b = [], [], 0
        for part in parts:                     # 4. one AdamW update per `per_update` prompts
            s, norm = update(policy, optimizer, params, groups[b:b + len(part)], cfg, autocast,
                             sampler, procs)
            stats, norms, b, updates = stats + s, norms + [norm], b + len(part), updates + 1
        m = report.step_metrics(step + 1, updates, figures, stats, weights, norms, lr, procs)
        m["answer_fallbacks"] = math_answers.take_fallbacks()["key"]   # keyed as text (this rank)
        m["seconds"] = time.time() - t0
        history.append(m)
        if on_step:
            on_step(m)
    return history


def vote_entropy(policy, processor, examples, cfg, autocast, sampler=rollout, procs=ONE):
    """Mean answer entropy of the vote over `examples`: N rollouts each, no update, seeded.

    ttrv.run measures it on the adaptation set before and after adapting, so both numbers
    come from the SAME prompts (the batches during adaptation each hold different ones).
    """
    options, device = sampling_options(policy, processor, cfg, procs), next(policy.parameters()).device
    torch.manual_seed(cfg.seed)
    values, n = [], cfg.rollouts
    for i in range(0, len(examples), cfg.prompts_per_step):
        batch = examples[i:i + cfg.prompts_per_step]
        inputs = procs.checked(prompts_of, processor, batch, device)
        with torch.no_grad(), autocast, procs.gathered(policy):
            ids = sampler.sample(policy, inputs, n, **options).completion_ids         # [B*N, T]
        texts = vlm.decode(processor, ids)
        values += [rewards.entropy(rewards.empirical_distribution(
            vote_keys(texts[b * n:(b + 1) * n], e, cfg))) for b, e in enumerate(batch)]
    return float(np.mean(values))


# ------------------------------------------------------------------------------- setup and run

def uses_bf16(cfg) -> bool:
    """bf16 autocast under --precision bf16, or auto on a GPU with bf16 (config.bf16_compute)."""
    return bf16_compute(cfg.precision, cfg.device)


def load_models(cfg, log=print, procs=ONE):
    """(policy, frozen reference, processor, autocast context, resolved name)."""
    from harness import tiny
    name = (str(procs.on_main(lambda: tiny.tiny_model_path(cfg.model, log=log)))
            if cfg.model in TINY_MODELS else models.resolve_name(cfg.model, log))
    # fp32 master weights even under bf16: an AdamW step at lr 5e-7 is far below bf16's resolution.
    policy, processor = vlm.load(name, cfg.device, torch.float32, cfg.allow_cpu)
    reference = lambda: vlm.load_model(name, "cpu", torch.float32, allow_cpu=True)  # noqa: E731
    policy, ref_model, autocast = prepare(policy, cfg, reference, procs)
    return policy, ref_model, processor, autocast, name


def prepare(policy, cfg, reference, procs=ONE):
    """(policy, ref_model, autocast): an fp32 model made ready for `adapt`.

    One precision story (ours): the policy computes under bf16 autocast from fp32 weights, and
    the reference makes the same computation (vlm.frozen_reference stores in bf16 exactly the
    weights autocast casts, the rest fp32), so at step 0 the two are one model: KL 0 (a copy
    wholly in bf16 is a slightly different model). --lora-rank: the reference is `policy` with
    its adapters off (harness/lora.py); otherwise a frozen copy of `reference()` (an fp32 load).
    """
    bf16 = uses_bf16(cfg)
    train_vision = not vlm.freeze_vision(policy, cfg.freeze_vision)  # None: the family's default
    if cfg.lora_rank:  # the frozen base stored as autocast computes; the adapters train in fp32
        vlm.compute_storage(policy, torch.bfloat16 if bf16 else None)
        policy, ref_model = lora.add(policy, cfg.lora_rank, cfg.lora_alpha or 2 * cfg.lora_rank,
                                     train_vision)
    else:
        ref_model = vlm.frozen_reference(reference(), torch.bfloat16 if bf16 else None)
        ref_model.to(next(policy.parameters()).device)
    if cfg.gradient_checkpointing:
        policy.activation_checkpointing_enable({"use_reentrant": False})  # ("gradient checkpointing")
    policy.train()
    procs.shard(policy, ref_model, bf16)   # torchrun: FSDP2, both gathered in bf16
    return policy, ref_model, torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=bf16)


def run(cfg, out: Path, log=print, procs=ONE, shared=None) -> dict:
    """One seed: base evaluation, adaptation, adapted evaluation; all written under `out`.

    `shared` (a dict, the same for every seed of one command) keeps the base model's
    evaluations: greedy decoding of the same freshly loaded model on the same test set gives
    the same answers for every seed, so only the first seed runs them.
    """
    shared = {} if shared is None else shared
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    adapt_name, eval_name = cfg.adapt_dataset or cfg.dataset, cfg.eval_dataset or cfg.dataset
    kw = dict(seed=cfg.data_seed, protocol=cfg.protocol, max_image_side=cfg.max_image_side)
    pool = presets.load_dataset(adapt_name, "test", data_dir=cfg.data_dir, **kw)
    test = pool if eval_name == adapt_name else presets.load_dataset(
        eval_name, "test", data_dir=cfg.eval_data_dir or cfg.data_dir, **kw)
    # official: a fixed adaptation set per dataset (the same for every seed); its train.json is
    # not public, so the closest thing is one draw with --data-seed
    draw_seed = cfg.data_seed if cfg.fixed_adaptation_set else cfg.seed
    # --protocol ttrl (num_samples None): the whole benchmark, as TTRL adapts (train = test)
    examples = data.draw_adaptation_set(pool, cfg.num_samples or len(pool), draw_seed,
                                        cfg.sampling, cfg.classes)    # labels stripped here
    test = test[:cfg.eval_limit]
    subset = (random.Random(cfg.data_seed).sample(test, min(cfg.eval_subset, len(test)))
              if cfg.eval_subset else test)                           # for --eval-every
    policy, ref_model, processor, autocast, name = load_models(cfg, log, procs)
    if cfg.temperature is None:  # --protocol official / ttrl: the family's value, known once loaded
        of = vlm.ttrl_temperature if cfg.protocol == "ttrl" else vlm.official_temperature
        cfg = dataclasses.replace(cfg, temperature=of(policy))
    sampler = rollout if cfg.shared_prefix else plain    # plain: the N-copies reference path
    (out / "config.json").write_text(json.dumps(
        dict(dataclasses.asdict(cfg), resolved_model=name), indent=2))
    log(f"run directory: {out}")
    results, curve, latest = {}, [], {}   # latest: step -> EvalResult of the whole test set

    def evaluate(examples_, key=None, step=None):
        # step 0, the base model: the same answers for every seed
        memo = None if step != 0 else "base" if examples_ is test else "base-subset"
        if key == "adapted" and step in latest and not cfg.eval_samples:
            r = latest[step]            # --eval-every already evaluated this model on it
        elif memo in shared:
            r = shared[memo]            # an earlier seed evaluated the same base model on it
        else:
            policy.eval()
            with procs.gathered(policy):
                r = evaluation.evaluate(
                    policy, processor, procs.share(examples_), batch_size=cfg.eval_batch_size,
                    autocast=autocast, progress=not cfg.quiet, desc=f"eval {key or ''}",
                    max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens,
                    num_workers=cfg.num_workers or 0, checked=procs.checked,
                    samples=cfg.eval_samples if key else 0,   # full evaluations
                    temperature=cfg.eval_temperature, top_p=cfg.eval_top_p, seed=cfg.seed,
                    any_alive=procs.any_alive)
            policy.train()
            r = procs.gather(r, len(examples_))
            if memo:
                shared[memo] = r
        if examples_ is test:
            latest[step] = r
        if key:  # a full evaluation: predictions and results on disk straight away
            evaluation.write_predictions(out / f"predictions_{key}.jsonl", r)
            results[key] = dict(accuracy=r.accuracy, correct=r.correct, total=r.total,
                                unparseable=r.unparseable, letter_forced_accuracy=r.letter_forced)
            if cfg.eval_samples:      # TTRL's figures: avg@K ("pass@1") and maj@K
                k = cfg.eval_samples
                results[key].update({f"avg@{k}": r.avg_at_k, f"maj@{k}": r.maj_at_k})
            (out / "results.json").write_text(json.dumps(results, indent=2))
            log(f"{key} accuracy {r.accuracy:.4f} ({r.correct}/{r.total})" + (
                f", avg@{cfg.eval_samples} {r.avg_at_k:.4f}, maj@{cfg.eval_samples} "
                f"{r.maj_at_k:.4f}" if cfg.eval_samples else ""))
        return r.accuracy

    base = evaluate(test, "base", step=0)
    before = vote_entropy(policy, processor, examples, cfg, autocast, sampler, procs)
    curve.append((0, base if subset is test else evaluate(subset, step=0)))   # Figure 1's x = 0
    with open(out / "metrics.jsonl", "w") as f:
        def on_step(m):  # written as it happens, so a crash keeps the steps so far
            if cfg.eval_every and m["step"] % cfg.eval_every == 0:
                m["eval_accuracy"] = evaluate(subset, step=m["step"])
                curve.append((m["step"], m["eval_accuracy"]))
            f.write(json.dumps(m) + "\n")
            f.flush()
            log(report.step_line(m))
        history = adapt(policy, ref_model, processor, examples, cfg, autocast, on_step,
                        sampler, procs)
    final = evaluate(test, "adapted", step=len(history))
    if curve[-1][0] != len(history):
        curve.append((len(history), final if subset is test
                      else evaluate(subset, step=len(history))))
    after = vote_entropy(policy, processor, examples, cfg, autocast, sampler, procs)
    results["base"]["answer_entropy"], results["adapted"]["answer_entropy"] = before, after
    results["trajectory"] = dict(accuracy=curve,
                                 entropy=[(m["step"], m["answer_entropy"]) for m in history],
                                 vote_entropy=[(0, before), (len(history), after)])
    (out / "results.json").write_text(json.dumps(results, indent=2))
    # in --save-dtype (default: the compute dtype), not always fp32; LoRA: the adapters, and the
    # merged model with --merge-lora (lora.for_saving)
    model = lora.for_saving(policy, out / "adapter", cfg.merge_lora) if cfg.save_model else None
    if model is not None:
        model.to(torch.bfloat16 if cfg.save_dtype == "bf16" else torch.float32)
        procs.save(model, out / "model")  # gathered under FSDP
        processor.save_pretrained(out / "model")
    return results
