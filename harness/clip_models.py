"""Loading and checking CLIP checkpoints for grpo_tta.py, and its per-image latency (for bench).

    check_clip("openai/clip-vit-base-patch16")     # ModelError in one sentence unless a CLIP
    model, processor = load_clip(name, "cuda")     # CLIPModel (fp32, eval) + AutoProcessor
    adaptation_latency()                           # seconds per phase of one image, tiny CLIP
"""

import os
import time

import torch

from vlm import ModelError


def check_clip(name: str) -> None:
    """ModelError (one sentence) unless `name` holds a CLIP config; reads config.json only."""
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as e:
        where = ("check the path" if os.path.exists(name) or name.startswith((".", "/", "~"))
                 else "no network, or no such model; download it elsewhere (hf download "
                 f"{name} --local-dir DIR) and pass DIR to --model")
        raise ModelError(f"Could not load a model config from {name} ({where}).") from e
    except ValueError as e:
        raise ModelError(f"{name} is not a model transformers knows ({e.__class__.__name__}); "
                         "pass a CLIP checkpoint such as openai/clip-vit-base-patch16.") from e
    kind = getattr(config, "model_type", None)
    if kind != "clip" or not hasattr(config, "text_config") or not hasattr(config, "vision_config"):
        raise ModelError(f"{name} is a {kind} model, not a CLIP with a text and a vision tower; "
                         "pass a CLIP checkpoint such as openai/clip-vit-base-patch16.")


def load_clip(name: str, device: str):
    from transformers import AutoProcessor, CLIPModel
    model = CLIPModel.from_pretrained(name, dtype=torch.float32).to(device).eval()
    return model, AutoProcessor.from_pretrained(name)


def adaptation_latency(model_dir=None, repeats: int = 5, device: str = "cpu", **settings) -> dict:
    """Seconds to adapt to one image with GRPO-TTA and predict, best of `repeats`: views
    (crops), forward (all views, no grad), steps (cfg.steps AdamW steps), predict; the tiny CLIP
    by default. `settings` override TTAConfig fields (views=64, steps=3, ...)."""
    import dataclasses

    from harness import tiny_clip
    from grpo_tta import (Episode, ViewMaker, chosen_parameters, confident_views, cosines,
                          grpo_tta_adapt, text_embeddings)
    from harness.grpo_tta_config import TTAConfig
    cfg = dataclasses.replace(TTAConfig(device=device), **settings)
    model, processor = load_clip(str(model_dir or tiny_clip.tiny_clip_path()), device)
    classes = [f"class {i}" for i in range(8)] if model_dir else tiny_clip.CLASSES
    text = text_embeddings(model, processor, classes, device)
    episode = Episode(chosen_parameters(model, cfg.params), cfg.lr, cfg.weight_decay)
    image, make_views = tiny_clip.toy_examples("shifted", 1)[0].image(), ViewMaker(processor, cfg.views)
    best = {}
    for r in range(repeats):
        episode.restore(episode.start)
        t = [time.perf_counter()]
        views = make_views(image, seed=r).to(device)
        t.append(time.perf_counter())
        scale = model.logit_scale.exp().detach()
        with torch.no_grad():
            kept = confident_views(scale * cosines(model, views, text), cfg.confident)
        t.append(time.perf_counter())
        grpo_tta_adapt(model, episode.optimizer, views[kept], text, scale, cfg,
                       torch.Generator().manual_seed(r))
        t.append(time.perf_counter())
        with torch.no_grad():
            cosines(model, views[:1], text).argmax()
        if device == "cuda":
            torch.cuda.synchronize()
        t.append(time.perf_counter())
        times = dict(zip(("views_s", "forward_s", "steps_s", "predict_s"),
                         (b - a for a, b in zip(t, t[1:]))), total_s=t[-1] - t[0])
        best = times if not best or times["total_s"] < best["total_s"] else best
    return best
