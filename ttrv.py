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
- Prompts per batch: 4 (the official code uses one per GPU, 8, with drop_last on 20 samples).
- All N = 32 responses vote and are trained on, as the paper says; the official code trains on
  16 of its 32 votes (--votes 32 --train-rollouts 16).
- Unparseable responses are each an answer of their own (--no-answer; official: their text).
- Each prompt is encoded once per group (shared_prefix.py), the same maths as N copies.
- Mixed precision: fp32 master weights with bf16 autocast, instead of verl's FSDP bf16 setup.
- torchrun (distributed.py): one AdamW update per K prompts, one per process, as the official
  code; --prompts-per-update K gives the same update in one process.
- The tiny model's presets (lr, lengths) differ from the paper's; see config.TINY_PRESETS.
- Answer extraction does not read the article "a" as option A (rewards.extract_choice).
"""

import dataclasses
import datetime
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import data
import distributed
import eval as evaluation
import grpo
import report
import rewards
import shared_prefix
import vlm
from config import Config, parse_args  # noqa: F401  (ttrv.parse_args is the public entry)


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


def score(texts, example, cfg, rng, entropies=None):
    """One prompt's N responses -> (rewards [N], answer entropy, majority share).

    Multiple choice votes on option letters; a question without options (counting) votes on
    the extracted number (rewards.extract_number).
    """
    if example.options:
        answers = [rewards.extract_choice(t, len(example.options)) for t in texts]
    else:
        answers = [rewards.extract_number(t) for t in texts]
    keys = rewards.answer_keys(answers, texts, no_answer=cfg.no_answer)
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
    rank's loss is scaled by K to make that a sum. A group with real=False weighs 0.
    """
    def size(mask):
        return float(mask.sum()) if cfg.loss_agg == "token_mean" else mask.shape[0]
    total = distributed.all_sum(sum(size(g[2]) for g in groups if g[5]))
    total = None if len(groups) == distributed.world() == 1 else total   # 1 group: as before
    stats = [update(policy, ref_model, *g[:5], cfg, autocast, total,
                    distributed.world() * float(g[5])) for g in groups]
    s = {key: float(np.mean([x[key] for x, g in zip(stats, groups) if g[5]] or [0.0]))
         for key in stats[0]}
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
    (each also passed to `on_step` as soon as the batch is done).

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
    total_updates, updates = sum(-(-len(b) // per_update) for b in batches), 0
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
        token_entropy = (None if roll.entropies is None else                          # [B*N]
                         ((roll.entropies * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist())
        scored = [score(texts[b * n:(b + 1) * n], e, cfg, reward_rng,                 # 2. rewards
                        token_entropy and token_entropy[b * n:(b + 1) * n])
                  for b, e in enumerate(batch)]
        r = torch.tensor(np.stack([s[0] for s in scored]), dtype=torch.float32)        # [B, N]
        # 3. advantages (eq. 2) over the k trained responses; frequencies used all n votes.
        advantages = grpo.group_advantages(r[:, :k], baseline=cfg.baseline).to(device)  # [B, k]
        stats, prompts, b = [], vlm.split_inputs(inputs), 0
        for part in shares:                 # 4. one AdamW update per `per_update` prompts
            groups = [(prompts[j], roll.completion_ids[j * n:j * n + k], mask[j * n:j * n + k],
                       roll.logprobs[j * n:j * n + k].float(), advantages[j], real[j])
                      for j in range(b, b + len(part))]
            b += len(part)
            lr = grpo.cosine_lr(updates, total_updates, cfg.lr, cfg.warmup_ratio)
            grpo.set_lr(optimizer, lr)
            s = apply_update(policy, ref_model, optimizer, params, groups, cfg, autocast)
            stats.append(dict(s, lr=lr))
            updates += 1
        if not all(real):                     # metrics of real prompts only (torchrun)
            r, scored = r[torch.tensor(real)], [x for x, ok in zip(scored, real) if ok]
        m = dict(step=step + 1, updates=updates, reward=float(r.mean()),
                 answer_entropy=float(np.mean([s[1] for s in scored])),
                 majority_share=float(np.mean([s[2] for s in scored])),
                 response_tokens=float(mask.sum(1).mean()),
                 **{key: float(np.mean([s[key] for s in stats])) for key in stats[0]},
                 seconds=time.time() - t0)
        if distributed.active():              # each rank's means, averaged over the ranks
            m = {key: float(np.mean([x[key] for x in distributed.gather(m)]))
                 if isinstance(v, float) else v for key, v in m.items()}
        history.append(m)
        if on_step:
            on_step(m)
    return history


# ------------------------------------------------------------------------------- setup

def run_dir(cfg) -> Path:
    """The run directory: fresh by default; an existing non-empty one only with --overwrite."""
    if cfg.output_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{Path(cfg.model).name}-{cfg.dataset.split(':')[0]}"
        path = Path("runs") / name
        for k in range(1, 100):
            if not path.exists():
                break
            path = Path("runs") / f"{name}-{k}"
    else:
        path = Path(cfg.output_dir)
        if path.exists() and any(path.iterdir()) and not cfg.overwrite:
            raise FileExistsError(f"{path} already holds a run; pass another --output-dir, or "
                                  "--overwrite to replace it.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_models(cfg, log=print):
    """(policy, frozen reference, processor, autocast context) for cfg.device and precision."""
    import tiny
    name = (str(distributed.on_main(lambda: tiny.tiny_model_path(log=log))) if cfg.model == "tiny"
            else vlm.resolve_name(cfg.model, log))
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cfg.device == "cuda")
    # fp32 master weights even under bf16: an AdamW step at lr 5e-7 is far below bf16's resolution.
    policy, processor = vlm.load(name, cfg.device, torch.float32, cfg.allow_cpu)
    ref_model = vlm.load_model(name, cfg.device, torch.bfloat16 if bf16 else torch.float32,
                               allow_cpu=True).eval().requires_grad_(False)
    if cfg.freeze_vision:
        for module_name, p in policy.named_parameters():
            if "visual" in module_name or "vision" in module_name:
                p.requires_grad_(False)
    if cfg.gradient_checkpointing:
        policy.activation_checkpointing_enable({"use_reentrant": False})  # ("gradient checkpointing")
    policy.train()
    if distributed.active():   # FSDP2: bf16 compute from fp32 masters; reference sharded too
        distributed.shard(policy, bf16), distributed.shard(ref_model, bf16=False)
    autocast = torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=bf16)
    return policy, ref_model, processor, autocast, name


def gathered_result(predictions) -> evaluation.EvalResult:
    """An EvalResult from all ranks' predictions (the sums of evaluation.evaluate)."""
    correct = sum(p["correct"] for p in predictions)
    return evaluation.EvalResult(correct / max(len(predictions), 1), correct, len(predictions),
                                 sum(p["prediction"] is None for p in predictions), predictions)


def run(cfg, out: Path, log=print) -> dict:
    """One seed: base evaluation, adaptation, adapted evaluation; all written under `out`."""
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    adapt_name, eval_name = cfg.adapt_dataset or cfg.dataset, cfg.eval_dataset or cfg.dataset
    pool = data.load_dataset(adapt_name, "test", data_dir=cfg.data_dir, seed=cfg.data_seed)
    test = pool if eval_name == adapt_name else data.load_dataset(
        eval_name, "test", data_dir=cfg.eval_data_dir or cfg.data_dir, seed=cfg.data_seed)
    examples = data.draw_adaptation_set(pool, cfg.num_samples, cfg.seed, cfg.sampling,
                                        cfg.classes)                  # labels stripped here
    test = test[:cfg.eval_limit]
    subset = (random.Random(cfg.data_seed).sample(test, min(cfg.eval_subset, len(test)))
              if cfg.eval_subset else test)                           # for --eval-every
    policy, ref_model, processor, autocast, name = load_models(cfg, log)
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
                r = gathered_result(distributed.gather_share(r.predictions, len(examples_)))
        if examples_ is test:
            latest[step] = r
        if key:  # a full evaluation: predictions and results on disk straight away
            evaluation.write_predictions(out / f"predictions_{key}.jsonl", r)
            results[key] = dict(accuracy=r.accuracy, correct=r.correct, total=r.total,
                                unparseable=r.unparseable)
            (out / "results.json").write_text(json.dumps(results, indent=2))
            log(f"{key} accuracy {r.accuracy:.4f} ({r.correct}/{r.total})")
        return r.accuracy

    base = evaluate(test, "base")
    curve.append((0, base if subset is test else evaluate(subset)))   # Figure 1's x = 0
    with open(out / "metrics.jsonl", "w") as f:
        def on_step(m):  # written as it happens, so a crash keeps the steps so far
            if cfg.eval_every and m["step"] % cfg.eval_every == 0:
                m["eval_accuracy"] = evaluate(subset, step=m["step"])
                curve.append((m["step"], m["eval_accuracy"]))
            f.write(json.dumps(m) + "\n")
            f.flush()
            log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in m.items()))
        history = adapt(policy, ref_model, processor, examples, cfg, autocast, on_step)
    final = evaluate(test, "adapted", step=len(history))
    if curve[-1][0] != len(history):
        curve.append((len(history), final if subset is test else evaluate(subset)))
    results["base"]["answer_entropy"] = history[0]["answer_entropy"]      # first rollouts
    results["adapted"]["answer_entropy"] = history[-1]["answer_entropy"]  # last rollouts
    trajectory = dict(accuracy=curve, entropy=[(m["step"], m["answer_entropy"]) for m in history])
    results["trajectory"] = trajectory
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if cfg.save_model:
        distributed.save_pretrained(policy, out / "model")  # gathered under FSDP
        processor.save_pretrained(out / "model")
    return results


def main(argv=None) -> int:
    cfg = parse_args(argv)
    cfg.device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if distributed.init(cfg.device) and not distributed.is_main():
        cfg.quiet = True                      # rank 0 alone logs and draws progress bars
    log = (lambda *a: None) if cfg.quiet else print
    seeds = cfg.seeds or [cfg.seed]
    try:
        out = distributed.on_main(run_dir, cfg)
        local = distributed.scratch_dir(out)  # ranks > 0 write only into a scratch directory
        runs = [run(dataclasses.replace(cfg, seed=s, seeds=None),
                    local / f"seed-{s}" if len(seeds) > 1 else local, log) for s in seeds]
    except (data.DataError, vlm.ModelError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError:
        print("error: out of GPU memory; lower --micro-batch, --prompts-per-step, --rollouts, "
              "--max-new-tokens or --eval-batch-size, or pass --freeze-vision (results so far "
              "are in the run directory).", file=sys.stderr)
        return 1
    if not distributed.is_main():
        distributed.remove_scratch(local, out)
        return 0
    summary = report.summarize(runs)
    table = report.paper_table({cfg.eval_dataset or cfg.dataset: summary})
    (out / "results.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(dict(summary, seeds=seeds), indent=2))
    plotted = report.plot_trajectory([r["trajectory"] for r in runs], out / "trajectory.png")
    for s, r in zip(seeds, runs):
        print(f"seed {s}:" if len(seeds) > 1 else "", report.run_table(r), sep="\n")
    print(table)
    print(f"answer entropy over the rollouts (first batch -> last batch, mean over seeds): "
          f"{np.mean([r['base']['answer_entropy'] for r in runs]):.3f} -> "
          f"{np.mean([r['adapted']['answer_entropy'] for r in runs]):.3f}")
    print(f"written to {out}" + (" (with trajectory.png)" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
