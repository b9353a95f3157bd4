"""GRPO-TTA for CLIP (grpo_tta.py, clip_data.py, tiny_clip.py): the GRPO pieces are grpo.py's,
the first ratio is exactly 1, advantages sum to 0, the episodic reset is bit-exact, the rewards'
properties, the real ViT-B/16 files (tokenizer ids, 224 px crop, a whole run on a folder), the
class-label datasets, the command line's endings and bad-input sentences, and one end-to-end run.
Random-weight tiny CLIPs only: the taught one (tiny_clip_path) is never built here.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness import clip_data
from harness import clip_models, grpo_tta_cli
import grpo
import grpo_tta
from harness import tiny_clip
from harness.grpo_tta_config import TINY_PRESETS, TTAConfig, parse_args

ROOT = Path(__file__).resolve().parent.parent
CLIP_FILES = ROOT.parent / "shared" / "fixtures" / "clip-vit-base-patch16"
SMALL = ["--limit", "4", "--views", "8", "--steps", "2", "--quiet"]


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    """A random-weight tiny CLIP checkpoint (config, weights, CLIPProcessor)."""
    return tiny_clip.build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def real_clip_dir():
    """A CPU-sized CLIP next to the real ViT-B/16 files, cached; skipped without ../shared
    (a user's clone), but a failure under CI=true, where ../shared is always laid out."""
    if not CLIP_FILES.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CLIP_FILES} is missing under CI")
        pytest.skip("../shared/fixtures/clip-vit-base-patch16 (real CLIP files) is absent")
    return tiny_clip.shrunk_path(CLIP_FILES)


@pytest.fixture
def setup(clip_dir):
    """(model, text embeddings, episode, views, cfg) on the random tiny CLIP."""
    model, processor = clip_models.load_clip(str(clip_dir), "cpu")
    cfg = TTAConfig(device="cpu", views=16, steps=3, lr=1e-2, group_size=4)
    text = grpo_tta.text_embeddings(model, processor, tiny_clip.CLASSES, "cpu")
    episode = grpo_tta.Episode(grpo_tta.chosen_parameters(model, cfg.params), cfg.lr, 0.0)
    image = tiny_clip.toy_examples("shifted", 1)[0].image()
    views = grpo_tta.ViewMaker(processor, cfg.views)(image, seed=0)
    return model, text, episode, views, cfg


def _spy(monkeypatch):
    calls, real = [], grpo.grpo_loss

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)
    monkeypatch.setattr(grpo, "grpo_loss", spy)
    return calls


def _adapt(setup, seed=0, steps=None):
    model, text, episode, views, cfg = setup
    cfg = dataclasses.replace(cfg, steps=steps or cfg.steps)
    scale = model.logit_scale.exp().detach()
    return grpo_tta.grpo_tta_adapt(model, episode.optimizer, views[:4], text, scale, cfg,
                                   torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- GRPO pieces

def test_the_loss_is_grpo_py_on_a_one_token_answer_and_the_first_ratio_is_exactly_1(
        setup, monkeypatch):
    calls = _spy(monkeypatch)
    stats = _adapt(setup)
    assert len(calls) == setup[4].steps                        # one grpo.grpo_loss per step
    (logp, old, ref, adv, mask), kw = calls[0]
    k = setup[4].group_size
    assert logp.shape == old.shape == ref.shape == mask.shape == (k, 1) and adv.shape == (k,)
    assert torch.equal(mask, torch.ones(k, 1)) and logp.requires_grad
    assert torch.equal(logp.detach(), old)                     # pi_old is the step-0 forward
    assert stats["first_ratio"] == 1.0                         # exactly, not approximately
    assert kw["clip_eps"] == setup[4].clip_eps and kw["beta"] == setup[4].beta
    later = calls[-1][0]
    assert not torch.equal(later[0].detach(), later[1])        # the policy moved, old did not
    assert torch.equal(later[1], old) and torch.equal(later[3], adv)   # one rollout, reused


def test_the_first_step_is_the_plain_policy_gradient_of_the_group(setup, clip_dir):
    """Parity with a plain computation: at ratio 1, grad of grpo_loss = grad of
    -(1/K) sum_k A_k log pi(c_k) (the KL to pi_ref = pi_old has zero gradient there)."""
    model, text, episode, views, cfg = setup
    cfg = dataclasses.replace(cfg, steps=1)
    scale = model.logit_scale.exp().detach()
    stats = grpo_tta.grpo_tta_adapt(model, episode.optimizer, views[:4], text, scale, cfg,
                                    torch.Generator().manual_seed(3))
    ours = {n: p.grad.clone() for n, p in episode.params.items()}
    episode.restore(episode.start)
    logp = grpo_tta.marginal_logprobs(scale * grpo_tta.cosines(model, views[:4], text))
    group, adv = torch.tensor(stats["group"]), torch.tensor(stats["advantages"])
    (-(adv * logp[group]).mean()).backward()
    for n, p in episode.params.items():
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", range(5))
def test_group_advantages_sum_to_zero(setup, seed):
    adv = torch.tensor(_adapt(setup, seed, steps=1)["advantages"])
    assert abs(float(adv.sum())) < 1e-5 and float(adv.abs().sum()) > 0


def test_the_episodic_reset_restores_every_weight_and_the_optimizer_bit_for_bit(setup):
    model, text, episode, views, cfg = setup
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    empty = json.dumps(episode.optimizer.state_dict(), default=str)
    _adapt(setup)
    assert any(not torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert episode.optimizer.state_dict()["state"]                  # AdamW moments exist now
    episode.restore(episode.start)
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert json.dumps(episode.optimizer.state_dict(), default=str) == empty
    # a snapshot with AdamW moments (continual mode) comes back exactly too, and later steps
    # do not write into it
    _adapt(setup)
    snap = episode.snapshot()
    moments = {k: {n: t.clone() for n, t in s.items()} for k, s in snap[1]["state"].items()}
    _adapt(setup, seed=1)
    episode.restore(snap)
    for n, p in episode.params.items():
        assert torch.equal(p, snap[0][n]), n
    for k, s in episode.optimizer.state_dict()["state"].items():
        for n, t in s.items():
            assert torch.equal(t, moments[k][n]), (k, n)


def test_every_adapting_method_starts_from_the_zero_shot_weights(setup, monkeypatch):
    model, text, episode, views, cfg = setup
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def checked(fn):
        def wrapper(*args, **kwargs):
            seen.append(all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
                        and not episode.optimizer.state_dict()["state"])
            return fn(*args, **kwargs)
        return wrapper
    monkeypatch.setattr(grpo_tta, "tpt_adapt", checked(grpo_tta.tpt_adapt))
    monkeypatch.setattr(grpo_tta, "grpo_tta_adapt", checked(grpo_tta.grpo_tta_adapt))
    for i in range(3):
        pred, _ = grpo_tta.adapt_image(model, episode, views, text, cfg, seed=i)
        assert set(pred) == set(grpo_tta.METHODS)
    assert seen == [True] * 6


def test_continual_mode_carries_each_methods_weights_to_the_next_image(setup):
    model, text, episode, views, cfg = setup
    states = {"TPT": episode.start, "GRPO-TTA": episode.start}
    grpo_tta.adapt_image(model, episode, views, text, cfg, seed=0, states=states)
    for method in states:
        assert states[method] is not episode.start
        assert any(not torch.equal(states[method][0][n], episode.start[0][n])
                   for n in episode.params)


# ------------------------------------------------------------------------------- pieces

def test_rewards_alignment_is_the_mean_cosine_and_dispersion_penalises_disagreeing_views():
    cos = torch.tensor([[0.3, 0.1, 0.2],
                        [0.3, 0.5, 0.2],
                        [0.3, 0.3, 0.2]])                        # [n views, C classes]
    group = torch.tensor([0, 1, 2])
    assert torch.allclose(grpo_tta.alignment_reward(cos, group), cos.mean(0))
    d = grpo_tta.dispersion_reward(cos, group)
    assert d[0] == 0 and d[2] == 0 and d[1] < 0                 # views agree on 0 and 2
    r = grpo_tta.candidate_rewards(cos, group, 1.0)
    assert r[0] > r[1]           # same mean cosine 0.3, but class 1's views disagree
    assert torch.equal(grpo_tta.candidate_rewards(cos, group, 0.0), cos.mean(0))
    assert torch.equal(grpo_tta.alignment_reward(cos, torch.tensor([2, 0])), cos.mean(0)[[2, 0]])


def test_group_draws_confident_views_vote_and_marginal():
    logp = torch.log_softmax(torch.tensor([2.0, 1.0, 0.0, -1.0, -2.0]), 0)
    g = torch.Generator().manual_seed(0)
    assert len(set(grpo_tta.draw_group(logp, 5, "without-replacement", g).tolist())) == 5
    assert grpo_tta.draw_group(logp, 2, "top-k", g).tolist() == [0, 1]
    assert grpo_tta.draw_group(logp, 50, "with-replacement", g).shape == (50,)
    logits = torch.tensor([[5.0, 0, 0], [0, 0, 0], [0, 4.0, 0], [0, 0, 3.0]])   # [V, C]
    assert grpo_tta.confident_views(logits, 0.5).tolist() == [0, 2]
    assert grpo_tta.confident_views(logits, 0.01).tolist() == [0]                # at least 1
    assert grpo_tta.zero_vote(torch.tensor([[1.0, 0], [0, 1.0], [0, 1.0]])) == 1
    assert grpo_tta.zero_vote(torch.tensor([[1.0, 0], [0, 3.0]])) == 1           # tie: mean prob
    expected = torch.log(torch.softmax(logits, -1).mean(0))
    torch.testing.assert_close(grpo_tta.marginal_logprobs(logits), expected)


def test_layernorm_parameters_are_the_vision_towers_layernorms_only(clip_dir):
    model, _ = clip_models.load_clip(str(clip_dir), "cpu")
    chosen = grpo_tta.chosen_parameters(model, "layernorm")
    layers = tiny_clip.VISION["num_hidden_layers"]
    assert len(chosen) == 2 * (2 * layers + 2)                  # pre, 2 per layer, post; w and b
    assert all(n.startswith("vision_model.") for n in chosen)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in chosen.values()}
    tower = grpo_tta.chosen_parameters(model, "tower")
    assert "visual_projection.weight" in tower and len(tower) > len(chosen)
    assert not model.text_model.embeddings.token_embedding.weight.requires_grad


def test_views_are_the_processors_image_then_seeded_crops(clip_dir):
    _, processor = clip_models.load_clip(str(clip_dir), "cpu")
    image = tiny_clip.toy_examples("shifted", 1)[0].image()
    make = grpo_tta.ViewMaker(processor, 8)
    views = make(image, seed=5)
    side = tiny_clip.VISION["image_size"]
    assert views.shape == (8, 3, side, side)
    assert torch.equal(views[0], processor(images=image, return_tensors="pt")["pixel_values"][0])
    assert torch.equal(views, make(image, seed=5)) and not torch.equal(views, make(image, seed=6))


# ------------------------------------------------------------------------------- datasets

def _folder(root, classes, per_class=2, size=(40, 30)):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (40 * i, 90, 160)).save(root / c / f"{i}.png")
    return root


def test_imagenet_v2_folders_are_read_as_numbers_and_named_by_the_built_in_list(tmp_path):
    _folder(tmp_path, [str(i) for i in range(1000)], per_class=1, size=(4, 4))
    ds = clip_data.load("imagenet-v2", data_dir=str(tmp_path))
    names = clip_data.imagenet_classnames()
    assert len(names) == 1000 and names[0] == "tench" and ds.classnames == names
    assert ds.labels[:3] == [0, 1, 2] and ds.examples[10].id.startswith("10/")
    assert ds.labels[10] == 10                                 # not position 2 of a text sort


def test_imagenet_a_as_class_folders_needs_a_wnid_names_file(tmp_path):
    data_dir = _folder(tmp_path / "a", ["n01498041", "n01531178", "n01534433"])
    with pytest.raises(clip_data.DataError, match="'WNID NAME' lines"):
        clip_data.load("imagenet-a", data_dir=str(data_dir))
    names = tmp_path / "LOC_synset_mapping.txt"
    names.write_text("n01440764 tench, Tinca tinca\nn01498041 stingray\nn01531178 goldfinch, "
                     "Carduelis carduelis\nn01534433 junco, snowbird\n")
    ds = clip_data.load("imagenet-a", data_dir=str(data_dir), classnames=str(names))
    assert ds.classnames == ["stingray", "goldfinch", "junco"] and ds.labels == [0, 0, 1, 1, 2, 2]


def test_a_folder_dataset_takes_folder_names_or_a_names_file(tmp_path):
    root = _folder(tmp_path / "f", ["golf_course", "lake", "river"])
    ds = clip_data.load(f"folder:{root}")
    assert ds.classnames == ["golf course", "lake", "river"] and len(ds.examples) == 6
    names = tmp_path / "names.txt"
    names.write_text("golf links\nmountain lake\nriver\n")
    assert clip_data.load(f"folder:{root}", classnames=str(names)).classnames[:2] == [
        "golf links", "mountain lake"]
    names.write_text("golf links\n")
    with pytest.raises(clip_data.DataError, match="1 names for 3 class folders"):
        clip_data.load(f"folder:{root}", classnames=str(names))
    assert len(clip_data.load("toy-shifted", limit=12).examples) == 12


# ------------------------------------------------------------------------------- command line

def _main(argv, capsys, code):
    try:
        result = grpo_tta_cli.main(argv)
    except SystemExit as e:
        result = e.code
    err = capsys.readouterr().err
    assert result == code, err
    assert "Traceback" not in err and err.count("error") == 1, err
    return err


def test_an_unknown_dataset_lists_the_known_ones_before_anything_loads(capsys):
    err = _main(["--dataset", "imagenet-z"], capsys, 2)
    assert "Unknown dataset 'imagenet-z'; known datasets: toy-shifted" in err
    assert "imagenet-a" in err and "folder:PATH" in err


def test_a_folder_of_one_class_ends_in_one_sentence_before_the_model(
        tmp_path, capsys, monkeypatch, clip_dir):
    monkeypatch.setattr(clip_models, "load_clip", lambda *a: pytest.fail("model loaded"))
    root = _folder(tmp_path / "f", ["cat"])
    out = tmp_path / "run"
    err = _main(["--model", str(clip_dir), "--dataset", f"folder:{root}", "--output-dir",
                 str(out)], capsys, 1)
    assert "has 1 class; CLIP adaptation needs at least 2 to choose from" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_model_that_is_not_a_clip_ends_in_one_sentence_before_the_data(
        tmp_path, capsys, monkeypatch):
    from transformers import BertConfig
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
               intermediate_size=8).save_pretrained(tmp_path / "bert")
    monkeypatch.setattr(clip_data, "load", lambda *a: pytest.fail("data loaded"))
    err = _main(["--model", str(tmp_path / "bert"), "--output-dir", str(tmp_path / "run")],
                capsys, 1)
    assert "is a bert model, not a CLIP with a text and a vision tower" in err


def test_the_hub_command_offline_ends_in_one_sentence(tmp_path):
    proc = subprocess.run([sys.executable, "grpo_tta.py", "--model", "openai/clip-vit-base-patch16",
                           "--dataset", "imagenet-a", "--output-dir", str(tmp_path / "run")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Could not load a model config from "
                                                   "openai/clip-vit-base-patch16 (no network")


def test_help_imports_no_torch():
    script = ("import runpy, sys\nsys.argv = ['grpo_tta.py', '--help']\ntry:\n"
              f"    runpy.run_path({str(ROOT / 'grpo_tta.py')!r}, run_name='__main__')\n"
              "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert "torch imported: False" in proc.stdout and "--group-size" in proc.stdout


def test_the_tiny_clip_presets_apply_only_to_tiny_clip():
    assert parse_args([]).lr == TINY_PRESETS["lr"] != TTAConfig.lr
    assert parse_args(["--model", "x"]).lr == TTAConfig.lr
    assert parse_args(["--lr", "3e-3"]).lr == 3e-3


def test_python_grpo_tta_end_to_end_and_overwrite_moves_the_old_run_aside(tmp_path, clip_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "grpo_tta.py", "--model", str(clip_dir), *SMALL, "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split()[0] for line in proc.stdout.splitlines()[1:5]]
    assert rows == list(grpo_tta.METHODS)
    results = json.loads((out / "results.json").read_text())
    for m in grpo_tta.METHODS:
        assert 0 <= results[m]["accuracy"] <= 1 and results[m]["total"] == 4
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and set(grpo_tta.METHODS) <= set(preds[0])
    assert "Traceback" not in proc.stderr
    again = cmd[2:]                                          # the same flags, in-process
    assert grpo_tta_cli.main(again) == 1 and (out / "results.json").exists()   # refused, kept
    assert grpo_tta_cli.main(again + ["--overwrite"]) == 0
    aside = list(tmp_path.glob("run.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "results.json").read_text() == json.dumps(
        results, indent=2)


def test_the_default_model_is_the_tiny_clip_from_the_cache(tmp_path, capsys, monkeypatch,
                                                             clip_dir):
    monkeypatch.setattr(tiny_clip, "tiny_clip_path", lambda log=print: clip_dir)
    assert grpo_tta_cli.main([*SMALL, "--no-reset", "--output-dir", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["resolved_model"] == str(clip_dir) and config["dataset"] == "toy-shifted"
    assert "GRPO-TTA" in capsys.readouterr().out


def test_adaptation_latency_reports_each_phase(clip_dir):
    t = clip_models.adaptation_latency(clip_dir, repeats=2, views=8, steps=1)
    assert set(t) == {"views_s", "forward_s", "steps_s", "predict_s", "total_s"}
    assert all(v > 0 for v in t.values())


# ------------------------------------------------------------------------------- real files

def test_real_clip_tokenizer_ids_and_the_224_px_crop(real_clip_dir):
    model, processor = clip_models.load_clip(str(real_clip_dir), "cpu")
    ids = processor.tokenizer(grpo_tta.PROMPT.format("cat"))["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert model.config.text_config.vocab_size == 49408
    image = Image.new("RGB", (500, 300), (10, 200, 30))
    assert processor(images=image, return_tensors="pt")["pixel_values"].shape == (1, 3, 224, 224)
    views = grpo_tta.ViewMaker(processor, 4)(image, seed=0)
    assert views.shape == (4, 3, 224, 224)
    z = model.get_image_features(pixel_values=views).pooler_output
    assert z.shape == (4, model.config.projection_dim)


def test_real_clip_runs_the_command_on_a_folder_of_images(real_clip_dir, tmp_path, capsys):
    root = _folder(tmp_path / "images", ["cat", "dog", "fox"], size=(300, 240))
    out = tmp_path / "run"
    assert grpo_tta_cli.main(["--model", str(real_clip_dir), "--dataset", f"folder:{root}",
                          "--group-size", "2", "--views", "4", "--steps", "1", "--quiet",
                          "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert all(results[m]["total"] == 6 for m in grpo_tta.METHODS)
    assert results["GRPO-TTA"]["mean_last_ratio"] == 1.0          # one step: the ratio is 1


# ------------------------------------------------------------------------------- the tiny CLIP

def test_the_tiny_clip_tokenizer_is_clips_own_class_one_token_a_word_and_the_same_every_build():
    from transformers import CLIPTokenizer
    tok = tiny_clip._tokenizer()
    assert isinstance(tok, CLIPTokenizer) and tok.get_vocab() == tiny_clip._tokenizer().get_vocab()
    for c in tiny_clip.CLASSES:
        pieces = tok.convert_ids_to_tokens(tok(grpo_tta.PROMPT.format(c))["input_ids"])
        assert pieces == ["<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", c + "</w>",
                          ".</w>", "<|endoftext|>"]
    assert tok("a golf course")["input_ids"][-1] == tok.eos_token_id       # anything encodes
