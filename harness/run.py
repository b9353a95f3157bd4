"""One TTRV run around the algorithm (ttrv.py): the data, the models, the protocol's temperature,
the sampler, the evaluations before and after, and every file of the run directory.

    setup, name = load_models(cfg)                 # ttrv.Setup: policy, reference, processor, ...
    history = ttrv.adapt(setup, examples, settings(cfg))
    results = run(cfg, Path("runs/x"))              # what harness/cli.py calls once per seed
"""
import dataclasses
import functools
import json
import random
from pathlib import Path

import numpy as np
import torch

import answers
import data
import eval as evaluation
import math_answers
import rewards
import rollout
import shared_prefix
import ttrv
import vlm
from harness import (batches, families, lora, math_data, models, precision, presets,
                     report, tiny, tiny_math)
from harness.config import TINY_MODELS
from processes import ONE


def settings(cfg) -> ttrv.Settings:
    """The algorithm's settings (ttrv.Settings) out of a run's Config (which holds every flag)."""
    return ttrv.Settings(**{f.name: getattr(cfg, f.name)
                            for f in dataclasses.fields(ttrv.Settings)})


def load_models(cfg, log=print, procs=ONE):
    """(ttrv.Setup, resolved model name): the policy in fp32 master weights, its frozen reference
    and precision context (harness/precision.py), the processor, and the sampler: the
    shared-prefix one (shared_prefix.py), or the plain N-copies path (rollout.py) with
    --no-shared-prefix."""
    if cfg.model == "tiny-math":
        name = str(procs.on_main(lambda: tiny_math.tiny_math_path(log=log)))
    elif cfg.model in TINY_MODELS:
        name = str(procs.on_main(lambda: tiny.tiny_model_path(cfg.model, log=log)))
    else:
        name = models.resolve_name(cfg.model, log)
    policy, processor = models.load(name, cfg.device, torch.float32, cfg.allow_cpu)
    reference = lambda: vlm.load_model(name, "cpu", torch.float32)  # noqa: E731
    policy, ref_model, autocast = precision.prepare(policy, cfg, reference, procs)
    sampler = shared_prefix if cfg.shared_prefix else rollout
    return ttrv.Setup(policy, ref_model, processor, autocast, sampler, procs), name


def votes(s, examples, hp):
    """Each example with the texts of its N rollouts: the adaptation's sampler and options, no
    update, seeded by hp.seed (so two calls on the same prompts draw alike)."""
    options, device = ttrv.sampling_options(s, hp), next(s.policy.parameters()).device
    torch.manual_seed(hp.seed)
    n = hp.rollouts
    for i in range(0, len(examples), hp.prompts_per_step):
        batch = examples[i:i + hp.prompts_per_step]
        inputs = s.procs.checked(ttrv.prompts_of, s.processor, batch, device)
        with torch.no_grad(), s.autocast, s.procs.gathered(s.policy):
            ids = s.sampler.sample(s.policy, inputs, n, **options).completion_ids     # [B*N, T]
        texts = vlm.decode(s.processor, ids)
        yield from ((e, texts[b * n:(b + 1) * n]) for b, e in enumerate(batch))


def vote_entropy(s, examples, hp):
    """Mean answer entropy of the vote over `examples`: N rollouts each, no update, seeded.

    `run` measures it on the adaptation set before and after adapting, so both numbers come
    from the SAME prompts (the batches during adaptation each hold different ones).
    """
    return float(np.mean([rewards.entropy(rewards.empirical_distribution(answers.vote_keys(
        texts, e, no_answer=hp.no_answer))) for e, texts in votes(s, examples, hp)]))


def majority_at_n(s, test, hp) -> float:
    """maj@N on the labelled `test` questions: the score of the plain majority answer of N =
    hp.rollouts responses, drawn as adaptation draws its votes (TTRL's claim: the adapted model
    beats the base model's maj@N). Costs one sampling pass of N responses per question."""
    return float(np.mean([answers.grade(answers.majority(
        [answers.extract(t, e, hp.answer_reader) for t in texts], e), e)
        for e, texts in votes(s, test, hp)]))


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
    s, name = load_models(cfg, log, procs)
    math_data.check_fits(s.processor, s.policy, pool, test)   # before any evaluation or update
    if cfg.temperature is None:  # --protocol official / ttrl: the family's value, known once loaded
        cfg = dataclasses.replace(cfg, temperature=families.protocol_temperature(s.policy,
                                                                                  cfg.protocol))
    hp = settings(cfg)
    (out / "config.json").write_text(json.dumps(
        dict(dataclasses.asdict(cfg), resolved_model=name), indent=2))
    log(f"run directory: {out}")
    results, curve, latest = {}, [], {}   # latest: step -> EvalResult of the whole test set
    prepare = functools.partial(batches.prompt_batches, num_workers=cfg.num_workers or 0)

    def evaluate(examples_, key=None, step=None):
        # step 0, the base model: the same answers for every seed
        memo = None if step != 0 else "base" if examples_ is test else "base-subset"
        if key == "adapted" and step in latest and not cfg.eval_samples:
            r = latest[step]            # --eval-every already evaluated this model on it
        elif memo in shared:
            r = shared[memo]            # an earlier seed evaluated the same base model on it
        else:
            s.policy.eval()
            with procs.gathered(s.policy):
                r = evaluation.evaluate(
                    s.policy, s.processor, procs.share(examples_), batch_size=cfg.eval_batch_size,
                    autocast=s.autocast, progress=not cfg.quiet, desc=f"eval {key or ''}",
                    max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens,
                    prepare=prepare, checked=procs.checked,
                    samples=cfg.eval_samples if key else 0,   # full evaluations
                    temperature=cfg.eval_temperature, top_p=cfg.eval_top_p, seed=cfg.seed,
                    any_alive=procs.any_alive)
            s.policy.train()
            r = procs.gather(r, len(examples_))
            if memo:
                shared[memo] = r
        if examples_ is test:
            latest[step] = r
        if key:  # a full evaluation: predictions and results on disk straight away
            evaluation.write_predictions(out / f"predictions_{key}.jsonl", r)
            results[key] = dict(accuracy=r.accuracy, correct=r.correct, total=r.total,
                                unparseable=r.unparseable, letter_forced_accuracy=r.letter_forced,
                                **report.lengths_and_levels(r.predictions))
            if cfg.eval_samples:      # TTRL's figures: avg@K ("pass@1"), maj@K and pass@k
                k = cfg.eval_samples
                results[key].update({f"avg@{k}": r.avg_at_k, f"maj@{k}": r.maj_at_k},
                                    **{f"pass@{j}": v for j, v in (r.pass_at_k or {}).items()})
            (out / "results.json").write_text(json.dumps(results, indent=2))
            log(f"{key} accuracy {r.accuracy:.4f} ({r.correct}/{r.total})" + (
                f", avg@{cfg.eval_samples} {r.avg_at_k:.4f}, maj@{cfg.eval_samples} "
                f"{r.maj_at_k:.4f}" if cfg.eval_samples else ""))
        return r.accuracy

    base = evaluate(test, "base", step=0)
    if cfg.base_majority:     # TTRL's bar: the base model's maj@N, N the votes of adaptation
        key = f"votes_maj@{hp.rollouts}"   # not maj@K: drawn as the votes are, not as eval's K
        results["base"][key] = majority_at_n(s, test, hp)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        log(f"base maj@{hp.rollouts} of the votes {results['base'][key]:.4f}")
    before = vote_entropy(s, examples, hp)
    curve.append((0, base if subset is test else evaluate(subset, step=0)))   # Figure 1's x = 0
    with open(out / "metrics.jsonl", "w") as f:
        def on_step(m):  # written as it happens, so a crash keeps the steps so far
            m["answer_fallbacks"] = math_answers.take_fallbacks()["key"]  # keyed as text (rank)
            if cfg.eval_every and m["step"] % cfg.eval_every == 0:
                m["eval_accuracy"] = evaluate(subset, step=m["step"])
                curve.append((m["step"], m["eval_accuracy"]))
            f.write(json.dumps(m) + "\n")
            f.flush()
            log(report.step_line(m))
        history = ttrv.adapt(s, examples, hp, on_step)
    final = evaluate(test, "adapted", step=len(history))
    if curve[-1][0] != len(history):
        curve.append((len(history), final if subset is test
                      else evaluate(subset, step=len(history))))
    after = vote_entropy(s, examples, hp)
    results["base"]["answer_entropy"], results["adapted"]["answer_entropy"] = before, after
    results["trajectory"] = dict(accuracy=curve,
                                 entropy=[(m["step"], m["answer_entropy"]) for m in history],
                                 vote_entropy=[(0, before), (len(history), after)])
    (out / "results.json").write_text(json.dumps(results, indent=2))
    # in --save-dtype (default: the compute dtype), not always fp32; LoRA: the adapters, and the
    # merged model with --merge-lora (lora.for_saving)
    model = lora.for_saving(s.policy, out / "adapter", cfg.merge_lora) if cfg.save_model else None
    if model is not None:
        model.to(torch.bfloat16 if cfg.save_dtype == "bf16" else torch.float32)
        procs.save(model, out / "model")  # gathered under FSDP
        s.processor.save_pretrained(out / "model")
    return results
