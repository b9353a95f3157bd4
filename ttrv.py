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
- Mixed precision: fp32 master weights with bf16 autocast, instead of verl's FSDP bf16 setup.
- The tiny model's presets (lr, lengths) differ from the paper's; see TINY_PRESETS.
- Answer extraction does not read the article "a" as option A (rewards.extract_choice).
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import data
import eval as evaluation
import grpo
import rewards
import shared_prefix
import vlm


def opt(default, group, help):  # one config field: default, --help group, help text
    return field(default=default, metadata=dict(group=group, help=help))


@dataclass
class Config:
    # model
    model: str = opt("tiny", "model", "hub id, local directory, or 'tiny' (built offline)")
    device: str = opt("auto", "model", "cuda, cpu, or auto (cuda when available)")
    precision: str = opt("auto", "model", "bf16 (fp32 master weights, bf16 autocast, bf16 "
                         "reference), fp32, or auto (bf16 on GPU, fp32 on CPU)")
    gradient_checkpointing: bool = opt(True, "model", "recompute activations in the backward")
    freeze_vision: bool = opt(False, "model", "train only the language model (saves memory)")
    allow_cpu: bool = opt(False, "model", "train a >1B model on the CPU anyway")
    # data
    dataset: str = opt("shapes", "data", "resisc45, shapes, folder:PATH or jsonl:PATH")
    data_dir: str = opt(None, "data", "local copy of the data (resisc45: the zip or folder)")
    num_samples: int = opt(20, "data", "unlabeled test examples to adapt on")
    seed: int = opt(0, "data", "seed for the adaptation draw, questions and sampling")
    # rollouts
    rollouts: int = opt(32, "rollouts", "N, responses sampled per prompt")
    temperature: float = opt(1.0, "rollouts", "sampling temperature")
    top_p: float = opt(1.0, "rollouts", "nucleus sampling threshold")
    max_new_tokens: int = opt(1024, "rollouts", "longest response, in tokens")
    prompts_per_step: int = opt(4, "rollouts", "prompts whose rollouts are drawn together")
    shared_prefix: bool = opt(True, "rollouts", "encode each prompt once per group "
                              "(--no-shared-prefix: the plain path, N copies)")
    # reward
    reward: str = opt("ttrv", "reward", "one of " + ", ".join(rewards.REWARDS))
    alpha: float = opt(0.75, "reward", "weight of the diversity reward (eq. 7)")
    entropy: str = opt("raw", "reward", "raw (the paper's eq. 5) or normalized (official code)")
    no_answer: str = opt("own", "reward", "how unparseable responses vote: own, pool or text")
    baseline: str = opt("group", "reward", "advantage baseline: group (eq. 2), batch or none")
    # optimisation
    lr: float = opt(5e-7, "optimisation", "peak learning rate (AdamW, cosine schedule)")
    weight_decay: float = opt(0.01, "optimisation", "AdamW weight decay")
    warmup_ratio: float = opt(0.03, "optimisation", "linear warmup, share of all updates")
    beta: float = opt(0.001, "optimisation", "KL penalty coefficient (k3 estimator)")
    clip_eps: float = opt(0.2, "optimisation", "importance ratio clip epsilon")
    dual_clip: float = opt(3.0, "optimisation", "dual-clip constant for negative advantages")
    loss_agg: str = opt("token_mean", "optimisation", "token_mean, sequence_mean or dr_grpo")
    max_grad_norm: float = opt(1.0, "optimisation", "gradient-norm clip")
    epochs: int = opt(2, "optimisation", "passes over the adaptation examples")
    # evaluation
    eval_batch_size: int = opt(32, "evaluation", "prompts per greedy evaluation batch")
    eval_limit: int = opt(None, "evaluation", "evaluate only the first N test examples")
    eval_max_new_tokens: int = opt(None, "evaluation", "default: --max-new-tokens")
    # output
    output_dir: str = opt(None, "output", "run directory (default: runs/<time>-<model>-<data>)")
    overwrite: bool = opt(False, "output", "allow writing into an existing run directory")
    save_model: bool = opt(True, "output", "save the adapted model (save_pretrained)")
    quiet: bool = opt(False, "output", "no progress bars or per-step logs")


# The tiny offline model is ~1,000x smaller than a 3B VLM: at the paper's lr of 5e-7 its weights
# would not move in 40 updates, and its answers are one letter. Used only with --model tiny,
# for settings the command line leaves at their default.
TINY_PRESETS = dict(lr=1e-4, max_new_tokens=8)


def parse_args(argv=None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    groups = {}
    for f in dataclasses.fields(Config):
        group = groups.get(f.metadata["group"]) or groups.setdefault(
            f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                               help=f.metadata["help"])
        else:
            group.add_argument(flag, type=f.type, default=f.default,
                               help=f.metadata["help"] + f" (default: {f.default})")
    args = parser.parse_args(argv)
    given = {a.split("=")[0][2:].replace("-", "_") for a in (argv or sys.argv[1:]) if a[:2] == "--"}
    cfg = Config(**vars(args))
    if cfg.model == "tiny":
        for key, value in TINY_PRESETS.items():
            if key not in given:
                setattr(cfg, key, value)
    return cfg


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
    """Log-probs of one prompt's N responses [N, T] (with grad unless called under no_grad)."""
    if cfg.shared_prefix:
        return shared_prefix.shared_prefix_logprobs(model, one_prompt, ids, mask, ids.shape[0],
                                                    cfg.temperature)
    return grpo.completion_logprobs(model, vlm.repeat_inputs(one_prompt, ids.shape[0]), ids,
                                    mask, cfg.temperature)


def score(texts, num_options, cfg, rng, entropies=None):
    """Rewards [N] and the group's answer statistics for one prompt's N responses."""
    answers = [rewards.extract_choice(t, num_options) for t in texts]
    keys = rewards.answer_keys(answers, texts, no_answer=cfg.no_answer)
    r = rewards.compute_rewards(cfg.reward, keys, alpha=cfg.alpha,
                                normalized_entropy=cfg.entropy == "normalized",
                                token_entropies=entropies, rng=rng)
    dist = rewards.empirical_distribution(keys)
    return r, rewards.entropy(dist), max(dist.values())


# ------------------------------------------------------------------------------- adaptation

def adapt(policy, ref_model, processor, examples, cfg, autocast, on_step=None):
    """Test-time RL on unlabeled `examples`; returns one metrics dict per batch of prompts
    (each also passed to `on_step` as soon as the batch is done).

    Labels are never read here: ttrv.main passes examples drawn by data.draw_adaptation_set,
    which strips them (tests/test_ttrv.py checks that labelled examples give the same updates).
    """
    device = next(policy.parameters()).device
    end_ids, pad_id = vlm.end_token_ids(policy, processor), vlm.pad_token_id(processor)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999),
                                  weight_decay=cfg.weight_decay)
    order = random.Random(cfg.seed)
    batches = []
    for _ in range(cfg.epochs):  # every example once per epoch, in a fresh seeded order
        idx = order.sample(range(len(examples)), len(examples))
        batches += [idx[i:i + cfg.prompts_per_step] for i in range(0, len(idx), cfg.prompts_per_step)]
    total_updates, update = sum(len(b) for b in batches), 0
    reward_rng = np.random.default_rng(cfg.seed)
    history = []
    for step, idx in enumerate(tqdm(batches, desc="adapt", disable=cfg.quiet)):
        t0 = time.time()
        batch = [examples[i] for i in idx]
        inputs = vlm.prompt_inputs(processor, [e.image() for e in batch], [e.question for e in batch])
        inputs = vlm.to_device(inputs, device)
        with autocast:
            roll = rollout(policy, inputs, cfg, end_ids, pad_id)     # from the policy before updates
        n = cfg.rollouts
        texts = vlm.decode(processor, roll.completion_ids)
        scored = []
        for b, e in enumerate(batch):
            ent = None if roll.entropies is None else [
                float((roll.entropies[i] * roll.mask[i]).sum() / roll.mask[i].sum())
                for i in range(b * n, (b + 1) * n)]
            scored.append(score(texts[b * n:(b + 1) * n], len(e.options), cfg, reward_rng, ent))
        r = torch.tensor(np.stack([s[0] for s in scored]), dtype=torch.float32)   # [B, N]
        advantages = grpo.group_advantages(r, baseline=cfg.baseline).to(device)   # [B, N]
        stats = []
        for b, one in enumerate(vlm.split_inputs(inputs)):  # one AdamW update per prompt
            rows = slice(b * n, (b + 1) * n)
            ids, mask = roll.completion_ids[rows], roll.mask[rows].float()
            with autocast:
                logp = group_logprobs(policy, one, ids, mask, cfg)
                with torch.no_grad():
                    ref_logp = group_logprobs(ref_model, one, ids, mask, cfg) if cfg.beta else None
            loss, s = grpo.grpo_loss(logp.float(), roll.logprobs[rows].float(),
                                     None if ref_logp is None else ref_logp.float(),
                                     advantages[b], mask, clip_eps=cfg.clip_eps, beta=cfg.beta,
                                     dual_clip=cfg.dual_clip, aggregation=cfg.loss_agg)
            lr = grpo.cosine_lr(update, total_updates, cfg.lr, cfg.warmup_ratio)
            grpo.set_lr(optimizer, lr)
            loss.backward()
            s["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            stats.append(dict(s, loss=loss.item(), lr=lr))
            update += 1
        m = dict(step=step + 1, updates=update, reward=float(r.mean()),
                 answer_entropy=float(np.mean([s[1] for s in scored])),
                 majority_share=float(np.mean([s[2] for s in scored])),
                 response_tokens=float(roll.mask.float().sum(1).mean()),
                 **{k: float(np.mean([s[k] for s in stats])) for k in stats[0]},
                 seconds=time.time() - t0)
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
    name = str(tiny.tiny_model_path(log=log)) if cfg.model == "tiny" else vlm.resolve_name(cfg.model, log)
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
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.train()
    autocast = torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=bf16)
    return policy, ref_model, processor, autocast, name


def results_table(results) -> str:
    rows = [("", "accuracy", "unparseable", "answer entropy")]
    for key in ("base", "adapted"):
        r = results.get(key)
        if r:
            rows.append((key, f"{r['accuracy']:.4f}", str(r["unparseable"]),
                         "" if r.get("answer_entropy") is None else f"{r['answer_entropy']:.3f}"))
    if results.get("base") and results.get("adapted"):
        rows.append(("delta", f"{results['adapted']['accuracy'] - results['base']['accuracy']:+.4f}",
                     "", ""))
    return "\n".join(" ".join(c.rjust(w) for c, w in zip(row, (8, 10, 12, 15))) for row in rows)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    cfg.device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    log = (lambda *a: None) if cfg.quiet else print
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)
    try:
        out = run_dir(cfg)
        test = data.load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, seed=cfg.seed)
        examples = data.draw_adaptation_set(test, cfg.num_samples, cfg.seed)  # labels stripped here
        test = test[:cfg.eval_limit]
        policy, ref_model, processor, autocast, name = load_models(cfg, log)
        (out / "config.json").write_text(json.dumps(dict(dataclasses.asdict(cfg), resolved_model=name), indent=2))
        log(f"run directory: {out}")
        eval_kw = dict(batch_size=cfg.eval_batch_size, autocast=autocast, progress=not cfg.quiet,
                       max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens)
        results = {}

        def evaluate(key):
            policy.eval()
            r = evaluation.evaluate(policy, processor, test, desc=f"eval {key}", **eval_kw)
            policy.train()
            evaluation.write_predictions(out / f"predictions_{key}.jsonl", r)
            results[key] = dict(accuracy=r.accuracy, correct=r.correct, total=r.total,
                                unparseable=r.unparseable)
            (out / "results.json").write_text(json.dumps(results, indent=2))
            log(f"{key} accuracy {r.accuracy:.4f} ({r.correct}/{r.total})")

        evaluate("base")
        with open(out / "metrics.jsonl", "w") as f:
            def on_step(m):  # written as it happens, so a crash keeps the steps so far
                f.write(json.dumps(m) + "\n")
                f.flush()
                log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in m.items()))
            history = adapt(policy, ref_model, processor, examples, cfg, autocast, on_step)
        evaluate("adapted")
        results["base"]["answer_entropy"] = history[0]["answer_entropy"]
        results["adapted"]["answer_entropy"] = history[-1]["answer_entropy"]
        (out / "results.json").write_text(json.dumps(results, indent=2))
        if cfg.save_model:
            policy.save_pretrained(out / "model")
            processor.save_pretrained(out / "model")
    except (data.DataError, vlm.ModelError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError:
        print("error: out of GPU memory; lower --prompts-per-step, --rollouts, --max-new-tokens or "
              "--eval-batch-size, or pass --freeze-vision (results so far are in the run "
              "directory).", file=sys.stderr)
        return 1
    print(results_table(results))
    print(f"answer entropy (mean over the first and last batch of rollouts): "
          f"{history[0]['answer_entropy']:.3f} -> {history[-1]['answer_entropy']:.3f}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
