"""TTRV: test-time reinforcement learning for a vision-language model, top to bottom.

    python ttrv.py                                              # tiny offline model on shapes
    python ttrv.py --model Qwen/Qwen2.5-VL-3B --dataset resisc45   # the paper's setting, 1 GPU

1. Draw 20 unlabeled examples from the test set (labels are stripped before anything sees them).
2. Evaluate the base model greedily on the whole test set.
3. For each batch of prompts: sample N = 32 responses per prompt from the current policy, extract
   the answers, score them with the self-consistency reward (eq. 3-7), turn the rewards into
   group advantages (eq. 2), then make one AdamW update per prompt with the clipped-ratio loss
   and a KL penalty to a frozen reference copy. Two epochs.
4. Evaluate the adapted model the same way; write everything to the run directory.

Where this departs from the paper / official code (each also said where it happens):
- Prompts per batch: 4 (the official code: one per GPU, 4 in the 2B/Qwen logs, 8 for InternVL3-8B).
- All N = 32 responses vote and are trained on, as the paper says; the official code trains on
  16 of its 32 votes (--votes 32 --train-rollouts 16).
- Unparseable responses are each an answer of their own (--no-answer; official: their text).
- Each prompt is encoded once per group (shared_prefix.py), the same maths as N copies.
- Mixed precision: fp32 master weights with bf16 autocast (verl's FSDP also keeps fp32 masters).
- --protocol official sets the official runs' settings (README "The two protocols").
- torchrun (distributed.py): one AdamW update per K prompts, one per process, as the official
  code; --prompts-per-update K gives the same update in one process.
- The tiny model's presets (lr, lengths) differ from the paper's; see config.TINY_PRESETS.
- Answer extraction does not read the article "a" as option A (rewards.extract_choice).
"""

import dataclasses
import json
import random
import sys
import time
from pathlib import Path

from config import TINY_MODELS, Config, parse_args  # noqa: F401  (ttrv.parse_args is public)

if __name__ == "__main__":  # --help and bad settings answer before torch and transformers load
    parse_args(sys.argv[1:])

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import data  # noqa: E402
import distributed  # noqa: E402
import eval as evaluation  # noqa: E402
import grpo  # noqa: E402
import presets  # noqa: E402
import report  # noqa: E402
import rundir  # noqa: E402
import rewards  # noqa: E402
import shared_prefix  # noqa: E402
import vlm  # noqa: E402


# ------------------------------------------------------------------------------- rollouts

def rollout(policy, inputs, cfg, end_ids, pad_id):
    """N responses per prompt from the current policy -> shared_prefix.Rollouts ([B*N, T])."""
    options = dict(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                   eos_token_ids=end_ids, pad_token_id=pad_id,
                   suppress_token_ids=vlm.placeholder_token_ids(policy))
    if cfg.shared_prefix:
        return shared_prefix.sample_shared(policy, inputs, cfg.rollouts, **options)
    repeated = vlm.repeat_inputs(inputs, cfg.rollouts)             # the plain path: N copies
    ids = grpo.sample(policy, repeated, **options)
    mask = grpo.completion_mask(ids, end_ids)
    with torch.no_grad():  # old-policy log-probs: a second forward the shared path avoids
        logp = grpo.completion_logprobs(policy, repeated, ids, mask, cfg.temperature)
    return shared_prefix.Rollouts(ids, logp, None, mask)


def group_logprobs(model, one_prompt, ids, mask, cfg):
    """Log-probs of one prompt's responses [n, T] (with grad unless called under no_grad)."""
    if cfg.shared_prefix:
        return shared_prefix.shared_prefix_logprobs(model, one_prompt, ids, mask, ids.shape[0],
                                                    cfg.temperature)
    return grpo.completion_logprobs(model, vlm.repeat_inputs(one_prompt, ids.shape[0]), ids,
                                    mask, cfg.temperature)


def vote_keys(texts, example, cfg):
    """One prompt's N responses -> the keys they vote with (rewards.answer_keys)."""
    if example.options:
        answers = [rewards.extract_choice(t, len(example.options)) for t in texts]
    else:
        answers = [rewards.extract_number(t) for t in texts]
    return rewards.answer_keys(answers, texts, no_answer=cfg.no_answer)


def vote_entropy(policy, processor, examples, cfg, autocast):
    """Mean answer entropy of the vote over `examples`: N rollouts each, no update, seeded.

    ttrv.run measures it on the adaptation set before and after adapting, so both numbers
    come from the SAME prompts (the batches during adaptation each hold different ones).
    """
    device = next(policy.parameters()).device
    end_ids, pad_id = vlm.end_token_ids(policy, processor), vlm.pad_token_id(processor)
    torch.manual_seed(cfg.seed)
    values, n = [], cfg.rollouts
    for i in range(0, len(examples), cfg.prompts_per_step):
        batch = examples[i:i + cfg.prompts_per_step]
        inputs = vlm.to_device(vlm.prompt_inputs(processor, [e.image() for e in batch],
                                                 [e.question for e in batch]), device)
        with torch.no_grad(), autocast:
            ids = rollout(policy, inputs, cfg, end_ids, pad_id).completion_ids     # [B*N, T]
        texts = vlm.decode(processor, ids)
        values += [rewards.entropy(rewards.empirical_distribution(
            vote_keys(texts[b * n:(b + 1) * n], e, cfg))) for b, e in enumerate(batch)]
    return float(np.mean(values))


def score(texts, example, cfg, rng, entropies=None):
    """One prompt's N responses -> (rewards [N], answer entropy, majority share).

    Multiple choice votes on option letters; a question without options (counting) votes on
    the extracted number (rewards.extract_number).
    """
    keys = vote_keys(texts, example, cfg)
    r = rewards.compute_rewards(cfg.reward, keys, alpha=cfg.alpha,
                                normalized_entropy=cfg.entropy == "normalized",
                                token_entropies=entropies, rng=rng,
                                dare_alpha=cfg.dare_alpha, dare_tau=cfg.dare_tau)
    dist = rewards.empirical_distribution(keys)
    return r, rewards.entropy(dist), max(dist.values())


def update(policy, ref_model, one_prompt, ids, mask, old_logp, advantages, cfg, autocast,
           total=None, scale=1.0):
    """Loss and backward for one prompt's group, in micro-batches of cfg.micro_batch rows.

    Each chunk's loss is weighted by its share of `total` (tokens for token_mean, rows
    otherwise; default this group's), so the accumulated gradient equals that of all groups of
    the update at once. `scale` multiplies the loss (0: a stand-in group that only keeps the
    ranks' forwards in step). Returns the loss statistics.
    """
    rows = ids.shape[0]
    size = cfg.micro_batch or rows
    total_tokens = mask.sum() if total is None else total
    rows_total = rows if total is None else total
    stats = []
    for c in range(0, rows, size):
        part = slice(c, c + size)
        with autocast:
            logp = group_logprobs(policy, one_prompt, ids[part], mask[part], cfg)
            with torch.no_grad():
                ref = group_logprobs(ref_model, one_prompt, ids[part], mask[part], cfg) if cfg.beta else None
        loss, s = grpo.grpo_loss(logp.float(), old_logp[part], None if ref is None else ref.float(),
                                 advantages[part], mask[part], clip_eps=cfg.clip_eps,
                                 beta=cfg.beta, dual_clip=cfg.dual_clip,
                                 aggregation=cfg.loss_agg, max_len=ids.shape[1])
        share = (mask[part].sum() / total_tokens if cfg.loss_agg == "token_mean"
                 else torch.tensor(ids[part].shape[0] / rows_total))
        (loss * share * scale).backward()
        stats.append((float(share), s))
    weight = sum(w for w, _ in stats)      # 1 unless `total` spans several groups
    return {k: sum(w * s[k] for w, s in stats) / weight for k in stats[0][1]}


def apply_update(policy, ref_model, optimizer, params, groups, cfg, autocast):
    """One AdamW update over `groups`: this rank's (prompt, ids, mask, old_logp, advantages,
    real) of the update's prompts. The loss is the token mean (or row mean) over the real groups
    of all ranks: their count is all-reduced. FSDP averages gradients over the K ranks, so each
    rank's loss is scaled by K to make that a sum. A group with real=False weighs 0. The
    returned statistics are means over the real groups of all ranks (the same on every rank).
    """
    def size(mask):
        return float(mask.sum()) if cfg.loss_agg == "token_mean" else mask.shape[0]
    total = distributed.all_sum(sum(size(g[2]) for g in groups if g[5]))
    total = None if len(groups) == distributed.world() == 1 else total   # 1 group: as before
    stats = [update(policy, ref_model, *g[:5], cfg, autocast, total,
                    distributed.world() * float(g[5])) for g in groups]
    s = distributed.mean_over_ranks({key: (sum(x[key] for x, g in zip(stats, groups) if g[5]),
                                           sum(g[5] for g in groups)) for key in stats[0]})
    s["grad_norm"] = grpo.clip_grad_norm(params, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return s


# ------------------------------------------------------------------------------- adaptation

def schedule(n_examples, cfg):
    """Batches of example indices: every example once per epoch, in a fresh seeded order."""
    order, batches = random.Random(cfg.seed), []
    for _ in range(cfg.epochs):
        idx = order.sample(range(n_examples), n_examples)
        batches += [idx[i:i + cfg.prompts_per_step] for i in range(0, n_examples, cfg.prompts_per_step)]
    return batches


def adapt(policy, ref_model, processor, examples, cfg, autocast, on_step=None):
    """Test-time RL on unlabeled `examples`; returns one metrics dict per batch of prompts
    (each also passed to `on_step` as soon as the batch is done). Besides the rewards and the
    loss statistics: `adv_abs`, the mean |A| over the trained responses, and
    `adv_nonzero_share`, the share of prompts whose advantages are not all 0 (a group of equal
    rewards has A = 0 and gives the policy-gradient term nothing to learn from).

    Labels are never read here: ttrv.run passes examples drawn by data.draw_adaptation_set,
    which strips them (tests/test_ttrv.py checks that labelled examples give the same updates).
    """
    device = next(policy.parameters()).device
    end_ids, pad_id = vlm.end_token_ids(policy, processor), vlm.pad_token_id(processor)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999),
                                  weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed + distributed.rank())   # rollouts: torch's global generator
    batches = schedule(len(examples), cfg)
    per_update = cfg.prompts_per_update or distributed.world()   # prompts per AdamW update
    updates = 0
    n, k = cfg.rollouts, cfg.train_rollouts or cfg.rollouts   # votes; trained responses
    reward_rng = np.random.default_rng(cfg.seed)
    history = []
    for step, idx in enumerate(tqdm(batches, desc="adapt", disable=cfg.quiet)):
        t0 = time.time()
        # this rank's prompts of each update (None: a zero-weight stand-in, under torchrun only)
        shares = [distributed.share(idx[u:u + per_update]) for u in range(0, len(idx), per_update)]
        real = [i is not None for part in shares for i in part]
        batch = [examples[idx[0] if i is None else i] for part in shares for i in part]
        inputs = vlm.prompt_inputs(processor, [e.image() for e in batch], [e.question for e in batch])
        inputs = vlm.to_device(inputs, device)
        with autocast:                                   # 1. rollouts, from the policy before
            roll = rollout(policy, inputs, cfg, end_ids, pad_id)        # this batch's updates
        if distributed.active():    # same T on every rank: the same number of forwards
            roll = shared_prefix.Rollouts(*distributed.same_length(
                [roll.completion_ids, roll.logprobs, roll.entropies, roll.mask], [pad_id, 0, 0, 0]))
        texts, mask = vlm.decode(processor, roll.completion_ids), roll.mask.float()   # [B*N, T]
        # DARE's u: each response's mean token entropy, already divided by ln V (Rollouts)
        token_entropy = (None if roll.entropies is None else                          # [B*N]
                         ((roll.entropies * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist())
        scored = [score(texts[b * n:(b + 1) * n], e, cfg, reward_rng,                 # 2. rewards
                        token_entropy and token_entropy[b * n:(b + 1) * n])
                  for b, e in enumerate(batch)]
        r = torch.tensor(np.stack([s[0] for s in scored]), dtype=torch.float32)        # [B, N]
        # 3. advantages (eq. 2) over the k trained responses; frequencies used all n votes.
        advantages = grpo.group_advantages(r[:, :k], baseline=cfg.baseline,
                                           ddof=cfg.adv_ddof).to(device)                # [B, k]
        # verl steps its scheduler once per batch of prompts (fsdp_workers.py:553): lr constant
        # within a batch; warmup int(0.03 * batches) = 0 on short runs, so batch 1 is at the peak.
        lr = grpo.cosine_lr(step, len(batches), cfg.lr, cfg.warmup_ratio)
        grpo.set_lr(optimizer, lr)
        stats, prompts, b = [], vlm.split_inputs(inputs), 0
        for part in shares:                 # 4. one AdamW update per `per_update` prompts
            groups = [(prompts[j], roll.completion_ids[j * n:j * n + k], mask[j * n:j * n + k],
                       roll.logprobs[j * n:j * n + k].float(), advantages[j], real[j])
                      for j in range(b, b + len(part))]
            b += len(part)
            s = apply_update(policy, ref_model, optimizer, params, groups, cfg, autocast)
            stats.append(dict(s, lr=lr))
            updates += 1
        # metrics of the real prompts of all ranks: this rank's sums and counts (a stand-in
        # counts 0), divided once summed over the ranks; the update statistics already are.
        keep = torch.tensor(real)                                                      # [B]
        rows, trained = keep.repeat_interleave(n), advantages[keep.to(device)]   # [B*N], [b, k]
        kept = [x for x, ok in zip(scored, real) if ok]
        m = dict(step=step + 1, updates=updates, **distributed.mean_over_ranks(dict(
                 reward=(r[keep].double().sum(), r[keep].numel()),
                 answer_entropy=(sum(x[1] for x in kept), len(kept)),
                 majority_share=(sum(x[2] for x in kept), len(kept)),
                 adv_abs=(trained.double().abs().sum(), trained.numel()),          # mean |A|
                 adv_nonzero_share=((trained != 0).any(1).sum(), len(kept)),  # groups that learn
                 response_tokens=(mask[rows.to(mask.device)].sum(), rows.sum()))),
                 **{key: float(np.mean([s[key] for s in stats])) for key in stats[0]},
                 seconds=time.time() - t0)
        history.append(m)
        if on_step:
            on_step(m)
    return history


# ------------------------------------------------------------------------------- setup

def load_models(cfg, log=print):
    """(policy, frozen reference, processor, autocast context) for cfg.device and precision."""
    import tiny
    name = (str(distributed.on_main(lambda: tiny.tiny_model_path(cfg.model, log=log)))
            if cfg.model in TINY_MODELS
            else vlm.resolve_name(cfg.model, log))
    bf16 = uses_bf16(cfg)
    # fp32 master weights even under bf16: an AdamW step at lr 5e-7 is far below bf16's resolution.
    policy, processor = vlm.load(name, cfg.device, torch.float32, cfg.allow_cpu)
    ref_model = vlm.load_model(name, cfg.device, torch.bfloat16 if bf16 else torch.float32,
                               allow_cpu=True).eval().requires_grad_(False)
    vlm.freeze_vision(policy, cfg.freeze_vision)    # None: the family's default (vlm.FAMILIES)
    if cfg.gradient_checkpointing:
        policy.activation_checkpointing_enable({"use_reentrant": False})  # ("gradient checkpointing")
    policy.train()
    if distributed.active():   # FSDP2: bf16 compute from fp32 masters; reference sharded too
        distributed.shard(policy, bf16), distributed.shard(ref_model, bf16=False)
    autocast = torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=bf16)
    return policy, ref_model, processor, autocast, name


def run(cfg, out: Path, log=print) -> dict:
    """One seed: base evaluation, adaptation, adapted evaluation; all written under `out`."""
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
    examples = data.draw_adaptation_set(pool, cfg.num_samples, draw_seed, cfg.sampling,
                                        cfg.classes)                  # labels stripped here
    test = test[:cfg.eval_limit]
    subset = (random.Random(cfg.data_seed).sample(test, min(cfg.eval_subset, len(test)))
              if cfg.eval_subset else test)                           # for --eval-every
    policy, ref_model, processor, autocast, name = load_models(cfg, log)
    if cfg.temperature is None:  # --protocol official: the family's value, known once loaded
        cfg = dataclasses.replace(cfg, temperature=vlm.official_temperature(policy))
    (out / "config.json").write_text(json.dumps(
        dict(dataclasses.asdict(cfg), resolved_model=name), indent=2))
    log(f"run directory: {out}")
    results, curve = {}, []

    latest = {}  # step -> EvalResult of the whole test set, so the last one is not rerun

    def evaluate(examples_, key=None, step=None):
        if key == "adapted" and step in latest:
            r = latest[step]            # --eval-every already evaluated this model on it
        else:
            policy.eval()
            r = evaluation.evaluate(policy, processor, distributed.contiguous_share(examples_),
                                    batch_size=cfg.eval_batch_size,
                                    autocast=autocast, progress=not cfg.quiet,
                                    desc=f"eval {key or ''}",
                                    max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens)
            policy.train()
            if distributed.active():   # every rank's share, gathered in dataset order
                r = evaluation.EvalResult.of(distributed.gather_share(r.predictions,
                                                                   len(examples_)))
        if examples_ is test:
            latest[step] = r
        if key:  # a full evaluation: predictions and results on disk straight away
            evaluation.write_predictions(out / f"predictions_{key}.jsonl", r)
            results[key] = dict(accuracy=r.accuracy, correct=r.correct, total=r.total,
                                unparseable=r.unparseable, letter_forced_accuracy=r.letter_forced)
            (out / "results.json").write_text(json.dumps(results, indent=2))
            log(f"{key} accuracy {r.accuracy:.4f} ({r.correct}/{r.total})")
        return r.accuracy

    base = evaluate(test, "base")
    before = vote_entropy(policy, processor, examples, cfg, autocast)  # same prompts as after
    curve.append((0, base if subset is test else evaluate(subset)))   # Figure 1's x = 0
    with open(out / "metrics.jsonl", "w") as f:
        def on_step(m):  # written as it happens, so a crash keeps the steps so far
            if cfg.eval_every and m["step"] % cfg.eval_every == 0:
                m["eval_accuracy"] = evaluate(subset, step=m["step"])
                curve.append((m["step"], m["eval_accuracy"]))
            f.write(json.dumps(m) + "\n")
            f.flush()
            log(report.step_line(m))
        history = adapt(policy, ref_model, processor, examples, cfg, autocast, on_step)
    final = evaluate(test, "adapted", step=len(history))
    if curve[-1][0] != len(history):
        curve.append((len(history), final if subset is test else evaluate(subset)))
    after = vote_entropy(policy, processor, examples, cfg, autocast)
    results["base"]["answer_entropy"], results["adapted"]["answer_entropy"] = before, after
    trajectory = dict(accuracy=curve, entropy=[(m["step"], m["answer_entropy"]) for m in history],
                      vote_entropy=[(0, before), (len(history), after)])
    results["trajectory"] = trajectory
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if cfg.save_model:  # in --save-dtype (default: the compute dtype), not always fp32
        policy.to(torch.bfloat16 if cfg.save_dtype == "bf16" else torch.float32)
        distributed.save_pretrained(policy, out / "model")  # gathered under FSDP
        processor.save_pretrained(out / "model")
    return results


def uses_bf16(cfg) -> bool:
    """bf16 autocast and reference under --precision bf16, or auto on a GPU."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and cfg.device == "cuda")


def main(argv=None) -> int:
    """The command line: checked settings, a fresh run directory, one run per seed, the results.

    Every ending says what happened in its run directory's status.json (complete, failed,
    interrupted) and, on failure, on the terminal in one line naming what was saved.
    """
    cfg = parse_args(argv)
    if cfg.device == "auto":
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.save_dtype = cfg.save_dtype or ("bf16" if uses_bf16(cfg) else "fp32")
    main_rank = not distributed.init(cfg.device) or distributed.is_main()
    if not main_rank:
        cfg.quiet = True                      # rank 0 alone logs, marks and draws progress bars
    log = (lambda *a: None) if cfg.quiet else tqdm.write   # tqdm.write: above any progress bar
    vlm.quiet_transformers()
    if evaluation.needs_hub(cfg.model, cfg.dataset, cfg.adapt_dataset, cfg.eval_dataset):
        vlm.work_offline_if_hub_unreachable(log)
    seeds = cfg.seeds or [cfg.seed]
    try:
        out = distributed.on_main(rundir.run_dir, cfg, log)
    except rundir.RunDirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    local = distributed.scratch_dir(out)      # ranks > 0 write only into a scratch directory
    if main_rank:
        rundir.mark(out, "running")
    error = None
    try:
        runs = [run(dataclasses.replace(cfg, seed=s, seeds=None),
                    local / f"seed-{s}" if len(seeds) > 1 else local, log) for s in seeds]
    except (data.DataError, vlm.ModelError) as e:
        error = str(e)
    except torch.cuda.OutOfMemoryError:
        error = ("out of GPU memory; lower --micro-batch, --prompts-per-step, --rollouts, "
                 "--max-new-tokens or --eval-batch-size, or pass --freeze-vision.")
    except KeyboardInterrupt:
        if main_rank:
            print(f"interrupted; {rundir.ending(out, 'interrupted')}", file=sys.stderr)
        return 130
    except BaseException as e:        # a bug: marked, then its traceback
        if main_rank:
            rundir.mark(out, "failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        distributed.remove_scratch(local, out)
    if not main_rank:
        return 1 if error else 0
    if error:
        print(f"error: {error}", file=sys.stderr)
        print(f"run failed; {rundir.ending(out, 'failed', error)}", file=sys.stderr)
        return 1
    method = "TTRV" if cfg.reward == "ttrv" else f"adapted ({cfg.reward} reward)"
    summary = report.summarize(runs)
    table = report.paper_table({cfg.eval_dataset or cfg.dataset: summary}, method=method)
    (out / "results.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(dict(summary, seeds=seeds), indent=2))
    plotted = report.plot_trajectory([r["trajectory"] for r in runs], out / "trajectory.png")
    for s, r in zip(seeds, runs):
        print(f"seed {s}:" if len(seeds) > 1 else "", report.run_table(r), sep="\n")
    if len(seeds) > 1:
        print(table)
    print(f"answer entropy of the vote on the {cfg.num_samples} adaptation images (same prompts, "
          f"before -> after, mean over seeds): "
          f"{np.mean([r['base']['answer_entropy'] for r in runs]):.3f} -> "
          f"{np.mean([r['adapted']['answer_entropy'] for r in runs]):.3f}")
    forced = [(r["base"]["letter_forced_accuracy"], r["adapted"]["letter_forced_accuracy"])
              for r in runs]
    if None not in forced[0]:
        print(f"letter-forced accuracy (argmax over the option letters, mean over seeds): "
              f"{100 * np.mean([b for b, _ in forced]):.2f} -> "
              f"{100 * np.mean([a for _, a in forced]):.2f}")
    rundir.mark(out, "complete")
    print(f"written to {out}")
    if plotted:
        print(f"Figure 1 (accuracy and answer entropy against the step): {out / 'trajectory.png'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:          # before the run directory existed
        print("interrupted; nothing was saved.", file=sys.stderr)
        sys.exit(130)
