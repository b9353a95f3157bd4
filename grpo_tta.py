"""GRPO-TTA: test-time GRPO for CLIP (Li, Zhang, Yuan, arXiv 2605.03403), beside zero-shot, ZERO, TPT.

    python grpo_tta.py                                            # tiny offline CLIP, shifted toy
    python grpo_tta.py --model openai/clip-vit-base-patch16 --dataset imagenet-a --data-dir DIR

Only the abstract is public: the group is the top-K class candidates sampled from CLIP's
similarity distribution, an alignment reward and a dispersion reward score them, and the visual
encoder is tuned. Everything else below is our reading, said where it happens (and tabled in
docs/grpo-tta.md). Per test image x, episodic (weights and AdamW state restored before each):

  views  = x and 63 random resized crops + flips of it (TPT's 64 views)         ViewMaker
  pi(c | v) = softmax_c(logit_scale * cos(f(v), t_c)),  t_c = "a photo of a {c}." frozen
  kept   = the 10% of views of lowest entropy (TPT)                             confident_views
  pi_old(c | x) = mean over kept views of pi(c | v) (TPT's averaged prediction) marginal_logprobs
  group  = K classes drawn from pi_old                                          draw_group
  r      = alignment_reward + w * dispersion_reward over the kept views
  A      = grpo.group_advantages(r)   (eq. 2 of the project's GRPO; a class is a one-token answer)
  loss   = grpo.grpo_loss(log pi(group) [K, 1], log pi_old, log pi_ref, A, mask ones)
  a few AdamW steps on the chosen visual parameters; predict argmax pi(c | x) on x itself.
Baselines, same views and kept views: zero-shot (x alone); ZERO (majority vote of the kept views'
argmax, no training); TPT's objective (entropy of pi_old) on the same parameters, optimiser and
steps as GRPO-TTA: TPT itself tunes 4 prompt tokens, not the visual encoder.
The command line, the run directory and the CLIP loading are harness/grpo_tta_cli.py's.
"""

if __name__ == "__main__":  # the command line is the harness's: --help answers before torch loads
    from harness import grpo_tta_cli
    raise SystemExit(grpo_tta_cli.command())

import copy

import torch

import grpo

PROMPT = "a photo of a {}."
METHODS = ("zero-shot", "ZERO", "TPT", "GRPO-TTA")


# ------------------------------------------------------------------------------- the policy

def text_embeddings(model, processor, classnames, device) -> torch.Tensor:
    """Unit text embeddings of "a photo of a {c}." for every class, computed once: [C, D]."""
    out = []
    with torch.no_grad():
        for i in range(0, len(classnames), 256):
            batch = processor.tokenizer([PROMPT.format(c) for c in classnames[i:i + 256]],
                                        padding=True, truncation=True, return_tensors="pt")
            z = model.get_text_features(**batch.to(device)).pooler_output          # [b, D]
            out.append(z / z.norm(dim=-1, keepdim=True))
    return torch.cat(out)


def cosines(model, pixel_values, text) -> torch.Tensor:
    """cos(f(v), t_c) for every view v and class c: [V, C] (grad flows if enabled)."""
    z = model.get_image_features(pixel_values=pixel_values).pooler_output            # [V, D]
    return (z / z.norm(dim=-1, keepdim=True)) @ text.T                               # [V, C]


def marginal_logprobs(logits) -> torch.Tensor:
    """log of the mean over views of softmax(logits): log pi(c | x), [V, C] -> [C] (TPT's
    averaged prediction, computed as logsumexp of the log-softmaxes minus log V)."""
    logp = torch.log_softmax(logits, dim=-1)                                         # [V, C]
    return torch.logsumexp(logp, dim=0) - torch.log(torch.tensor(float(logits.shape[0])))


def entropy(logp) -> torch.Tensor:
    """H = -sum_c p log p over the last dimension, from log-probs."""
    return -(logp.exp() * logp).sum(-1)


# ------------------------------------------------------------------------------- views

class ViewMaker:
    """TPT's views of one image: the image as CLIP's processor shows it (resize, centre crop),
    then views - 1 random resized crops of the full image (torchvision's defaults: scale
    0.08-1, ratio 3/4-4/3) with a random horizontal flip, resized (bicubic) to the processor's
    crop size and normalised with its mean and std. Seeded per image: every method sees the
    same views. Our reading: TPT's AugMix is used only on fine-grained sets; we never use it."""

    def __init__(self, processor, views: int):
        import torchvision.transforms as T
        ip = processor.image_processor
        self.size = (ip.crop_size["width"], ip.crop_size["height"])
        self.processor, self.views, self.params = processor, views, T.RandomResizedCrop.get_params
        self.mean = torch.tensor(ip.image_mean)[:, None, None]
        self.std = torch.tensor(ip.image_std)[:, None, None]
        self.to_tensor = T.functional.pil_to_tensor

    def crop(self, image):
        """One random resized crop (torchvision's parameters) with a flip half the time."""
        from PIL import Image
        top, left, h, w = self.params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        view = image.resize(self.size, Image.BICUBIC, box=(left, top, left + w, top + h))
        return view.transpose(Image.FLIP_LEFT_RIGHT) if torch.rand(1) < 0.5 else view

    def __call__(self, image, seed: int) -> torch.Tensor:                          # [V, 3, S, S]
        first = self.processor(images=image, return_tensors="pt")["pixel_values"]    # [1, 3, S, S]
        with torch.random.fork_rng(devices=[]):    # torch's generator, for this image only
            torch.manual_seed(seed)
            crops = torch.stack([self.to_tensor(self.crop(image))
                                 for _ in range(self.views - 1)]).float()           # [V-1, 3, S, S]
        return torch.cat([first, (crops / 255.0 - self.mean) / self.std])


def confident_views(logits, share: float) -> torch.Tensor:
    """TPT's selection: indices of the int(V * share) views (at least 1) of lowest entropy."""
    keep = max(1, int(logits.shape[0] * share))
    return torch.argsort(entropy(torch.log_softmax(logits, dim=-1)))[:keep]


# ------------------------------------------------------------------------------- GRPO-TTA

def draw_group(logp_old, k: int, sampling: str, generator) -> torch.Tensor:
    """K class candidates from pi_old: [C] log-probs -> [K] class indices. Our reading of
    "top-K candidates sampled": without replacement (K distinct classes, each drawn with
    probability proportional to pi_old among those left); "with-replacement" and "top-k"
    (deterministic) are the alternatives (--sampling)."""
    if sampling == "top-k":
        return torch.topk(logp_old, k).indices
    return torch.multinomial(logp_old.exp(), k, replacement=sampling == "with-replacement",
                             generator=generator)


def alignment_reward(cos, group) -> torch.Tensor:
    """Our reading of the alignment reward: the candidate's mean cosine similarity to the kept
    views, mean_v cos(f(v), t_c): [n, C], [K] -> [K]."""
    return cos[:, group].mean(0)


def dispersion_reward(cos, group) -> torch.Tensor:
    """Our reading of the dispersion reward: minus the spread over the kept views of the
    candidate's similarity, -std_v cos(f(v), t_c) (population std): a class all views agree on
    beats one that only some views see. [n, C], [K] -> [K]."""
    return -cos[:, group].std(0, correction=0)


def candidate_rewards(cos, group, weight: float) -> torch.Tensor:
    """R(c) = alignment + weight * dispersion (our reading: a weighted sum, weight 1): [K]."""
    return alignment_reward(cos, group) + weight * dispersion_reward(cos, group)


def grpo_tta_adapt(model, optimizer, views, text, scale, cfg, generator, ref_logp=None) -> dict:
    """cfg.steps AdamW steps of GRPO on one group drawn once from pi_old (our reading: one
    group per image, reused for every step as GRPO reuses a rollout, so from step 2 on the
    ratio moves and clip_eps acts). `views`: the kept views. `ref_logp` [C]: the zero-shot
    CLIP's log pi on them, for the KL; None means pi_old is the zero-shot CLIP (episodic)."""
    ones = torch.ones(cfg.group_size, 1, device=views.device)                     # [K, 1] mask
    for step in range(cfg.steps):
        cos = cosines(model, views, text)                                          # [n, C]
        logp = marginal_logprobs(scale * cos)                                      # [C]
        if step == 0:   # the rollout: pi_old is this very forward, so the first ratio is 1
            old = logp.detach()
            group = draw_group(old, cfg.group_size, cfg.sampling, generator)      # [K]
            rewards = candidate_rewards(cos.detach(), group, cfg.dispersion_weight)   # [K]
            advantages = grpo.group_advantages(rewards[None])[0]                   # [K], eq. 2
            ref = old if ref_logp is None else ref_logp
        loss, stats = grpo.grpo_loss(logp[group][:, None], old[group][:, None],
                                     ref[group][:, None], advantages, ones,
                                     clip_eps=cfg.clip_eps, beta=cfg.beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == 0:
            first = stats
    return dict(first_ratio=first["ratio"], last_ratio=stats["ratio"], kl=stats["kl"],
                clip_frac=stats["clip_frac"], reward=float(rewards.mean()),
                group=group.tolist(), advantages=advantages.tolist())


# ------------------------------------------------------------------------------- baselines

def zero_vote(logits) -> int:
    """ZERO: the majority vote of the kept views' argmax ([n, C] -> a class). Ties (our
    reading) go to the tied class of highest averaged probability."""
    votes = torch.bincount(logits.argmax(-1), minlength=logits.shape[1])            # [C]
    tied = votes == votes.max()
    return int(torch.where(tied, marginal_logprobs(logits), -torch.inf).argmax())


def tpt_adapt(model, optimizer, views, text, scale, cfg) -> dict:
    """TPT's objective: minimise the entropy of the kept views' averaged prediction, cfg.steps
    AdamW steps on the same visual parameters as GRPO-TTA (TPT itself tunes prompt tokens)."""
    for _ in range(cfg.steps):
        loss = entropy(marginal_logprobs(scale * cosines(model, views, text)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return dict(entropy=float(loss.detach()))


# ------------------------------------------------------------------------------- parameters, reset

def chosen_parameters(model, which: str) -> dict:
    """The visual parameters to tune, every other parameter frozen. Our reading, default
    "layernorm": the vision tower's LayerNorm scales and shifts (TENT's choice of normalisation
    affines: few parameters, stable under a few steps at a large lr); "tower": the whole vision
    tower and its projection (RLCF tunes the image encoder)."""
    model.requires_grad_(False)
    tower = model.vision_model
    if which == "layernorm":
        chosen = {f"vision_model.{m}.{n}": p for m, mod in tower.named_modules()
                  if isinstance(mod, torch.nn.LayerNorm) for n, p in mod.named_parameters()}
    else:
        chosen = {**{f"vision_model.{n}": p for n, p in tower.named_parameters()},
                  **{f"visual_projection.{n}": p for n, p in model.visual_projection.named_parameters()}}
    for p in chosen.values():
        p.requires_grad_(True)
    return chosen


class Episode:
    """The tuned parameters and one AdamW over them; `restore(snapshot())` puts both back bit
    for bit. Episodic TTA restores `start` (the zero-shot weights, empty AdamW) before every
    image; continual TTA (--no-reset) restores each method's own last snapshot."""

    def __init__(self, params: dict, lr: float, weight_decay: float):
        self.params = params
        self.optimizer = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=weight_decay)
        self.start = self.snapshot()

    def snapshot(self):
        return ({n: p.detach().clone() for n, p in self.params.items()},
                copy.deepcopy(self.optimizer.state_dict()))

    def restore(self, snap):
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(snap[0][n])
        self.optimizer.load_state_dict(snap[1])     # torch copies the moments: snap stays as is
        self.optimizer.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------- one image

def adapt_image(model, episode, views, text, cfg, seed, states=None) -> tuple[dict, dict]:
    """All four methods on one image's views: ({method: predicted class}, {method: stats}).
    `states` (continual mode) maps TPT and GRPO-TTA to their own snapshots and is updated."""
    scale = model.logit_scale.exp().detach()
    episode.restore(episode.start)
    with torch.no_grad():
        logits = scale * cosines(model, views, text)                               # [V, C]
    kept = confident_views(logits, cfg.confident)                                  # [n]
    pred = {"zero-shot": int(logits[0].argmax()), "ZERO": zero_vote(logits[kept])}
    ref, info = None, {}            # episodic: pi_ref is pi_old (the zero-shot weights)
    for method in ("TPT", "GRPO-TTA"):
        if states is not None:          # continual: this method's own weights and selection
            episode.restore(states[method])
            with torch.no_grad():
                kept = confident_views(scale * cosines(model, views, text), cfg.confident)
                ref = episode_ref(model, episode, states[method], views[kept], text, scale)
        else:
            episode.restore(episode.start)
        if method == "TPT":
            info[method] = tpt_adapt(model, episode.optimizer, views[kept], text, scale, cfg)
        else:
            generator = torch.Generator().manual_seed(seed)
            info[method] = grpo_tta_adapt(model, episode.optimizer, views[kept], text, scale,
                                          cfg, generator, ref)
        with torch.no_grad():           # the prediction on the original image, view 0
            pred[method] = int(cosines(model, views[:1], text)[0].argmax())
        if states is not None:
            states[method] = episode.snapshot()
    return pred, info


def episode_ref(model, episode, current, views, text, scale):
    """log pi_ref on `views` under the zero-shot weights (episode.start), then back to `current`."""
    episode.restore(episode.start)
    ref = marginal_logprobs(scale * cosines(model, views, text))
    episode.restore(current)
    return ref
