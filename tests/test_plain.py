"""The plain N-copies path (rollout.py) and generate (eval.generate) on a tiny Qwen2.5-VL:
log-probs against a forward written out here, sampling options, modes and flags restored."""
import math

import pytest
import torch
import transformers as tf
from PIL import Image

import rollout
from eval import generate
from grpo import completion_mask, group_advantages, grpo_loss

EOS, PAD = 2, 0  # tiny.py: <|im_end|> and <|endoftext|>


# ----------------------------------------------------------------------------- tiny Qwen2.5-VL

QUESTIONS = ["What shape?", "Look at the given image and identify what it shows; zebra quilt voxel jigsaw "
             "wombat fjord. Options: A B C D"]  # lengths differ whatever the tiny vocabulary


def _prompt(processor, q):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def _images():
    g = torch.Generator().manual_seed(1)
    arrays = [torch.randint(0, 256, (112, 112, 3), generator=g),
              torch.randint(0, 256, (84, 56, 3), generator=g)]
    return [Image.fromarray(a.to(torch.uint8).numpy()) for a in arrays]  # 112x112 and 56x84


def _prompt_inputs(processor, idx=(0, 1)):
    images = _images()
    return processor(text=[_prompt(processor, QUESTIONS[i]) for i in idx],
                     images=[images[i] for i in idx], return_tensors="pt", padding=True)


def _repeat(inputs, n):
    """Each prompt row n times, keeping pixel_values (rows of all images, concatenated) aligned."""
    out = {k: v.repeat_interleave(n, dim=0) for k, v in inputs.items() if k != "pixel_values"}
    per_image = inputs["pixel_values"].split(inputs["image_grid_thw"].prod(-1).tolist())
    out["pixel_values"] = torch.cat([p for p in per_image for _ in range(n)])
    return out


# 2 prompts x 3 completions; rows end early in eos, late, or never; padded with PAD after eos
COMPLETIONS = torch.tensor([
    [17, 40, EOS, PAD, PAD, PAD, PAD],
    [33, 33, 51, 60, 70, 80, 90],       # no end token
    [EOS, PAD, PAD, PAD, PAD, PAD, PAD],
    [101, 102, 103, 104, 105, EOS, PAD],
    [7, EOS, PAD, PAD, PAD, PAD, PAD],
    [200, 201, 202, 203, 204, 205, EOS],
])


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    processor = tf.AutoProcessor.from_pretrained(tiny_dir)
    model = tf.AutoModelForImageTextToText.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    return model, processor


def _reference_logprobs(model, inputs, completions, temperature):
    """Plain forward over [prompt | completion] with full logits, completion attention all ones."""
    B, P = inputs["input_ids"].shape
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], completions], 1)
    full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(completions)], 1)
    full["mm_token_type_ids"] = torch.cat(
        [inputs["mm_token_type_ids"], torch.zeros_like(completions)], 1)
    with torch.no_grad():
        logits = model(**full).logits  # [B, P+T, V]
    logp = torch.log_softmax(logits[:, P - 1:-1] / temperature, dim=-1)
    return logp.gather(-1, completions[..., None]).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_completion_logprobs_match_plain_forward(tiny, temperature):
    model, processor = tiny
    prompts = _prompt_inputs(processor)
    inputs = _repeat(prompts, 3)
    assert inputs["attention_mask"][0].sum() < inputs["attention_mask"][3].sum()  # padding in use
    mask = completion_mask(COMPLETIONS, [EOS])
    with torch.no_grad():
        got = rollout.logprobs(model, prompts, COMPLETIONS, mask, temperature=temperature)
        repeated = rollout.logprobs(model, inputs, COMPLETIONS, mask, temperature)   # n = 1
    want = _reference_logprobs(model, inputs, COMPLETIONS, temperature)
    assert got.shape == COMPLETIONS.shape
    on = mask.bool()
    torch.testing.assert_close(got[on], want[on], atol=1e-5, rtol=0)
    torch.testing.assert_close(repeated, got, atol=1e-6, rtol=0)
    assert (got[~on] == 0).all()


def test_completion_logprobs_match_unpadded_single_rows(tiny):
    """Padding-free reference: each row alone, its prompt unpadded and its completion cut at eos."""
    model, processor = tiny
    mask = completion_mask(COMPLETIONS, [EOS])
    got = rollout.logprobs(model, _prompt_inputs(processor), COMPLETIONS, mask, temperature=1.0)
    assert got.requires_grad  # grad enabled here: ready for the loss
    for row in range(6):
        single = _prompt_inputs(processor, idx=(row // 3,))
        n = int(mask[row].sum())
        comp = COMPLETIONS[row:row + 1, :n]
        want = _reference_logprobs(model, single, comp, 1.0)[0]
        torch.testing.assert_close(got[row, :n].detach(), want, atol=1e-5, rtol=0)


def test_completion_logprobs_with_pad_equal_to_eos(tiny):
    model, processor = tiny
    inputs = _repeat(_prompt_inputs(processor), 3)
    comps = torch.where(COMPLETIONS == PAD, torch.full_like(COMPLETIONS, EOS), COMPLETIONS)
    mask = completion_mask(comps, [EOS])
    assert torch.equal(mask, completion_mask(COMPLETIONS, [EOS]))
    with torch.no_grad():
        got = rollout.logprobs(model, _prompt_inputs(processor), comps, mask)
    want = _reference_logprobs(model, inputs, comps, 1.0)
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=0)


def test_completion_logprobs_after_generate_with_other_batch_size(tiny, tiny_dir):
    """generate leaves rope_deltas for ITS batch (2 rows) on the model; a 6-row forward
    must not use them."""
    _, processor = tiny
    model = tf.AutoModelForImageTextToText.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    fresh = tf.AutoModelForImageTextToText.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    prompts = _prompt_inputs(processor)
    generate(model, prompts, temperature=0.0, top_p=1.0, max_new_tokens=3, eos_token_ids=[EOS],
             pad_token_id=PAD)
    assert model.model.rope_deltas is not None and model.model.rope_deltas.shape[0] == 2
    mask = completion_mask(COMPLETIONS, [EOS])
    with torch.no_grad():
        got = rollout.logprobs(model, prompts, COMPLETIONS, mask)
        want = rollout.logprobs(fresh, prompts, COMPLETIONS, mask)
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- sampling
# Both N-copies samplers: rollout.sample (the loop's --no-shared-prefix path) and eval.generate
# (transformers' generate, evaluation's), each over the prompts repeated n times.

SAMPLERS = ["plain", "generate"]


def sample(kind, model, prompts, n, **kw):
    """[B*n, T] token ids, row b*n + j sample j of prompt b."""
    if kind == "generate":
        return generate(model, _repeat(prompts, n), **kw)
    return rollout.sample(model, prompts, n, **kw).completion_ids


def _gc_flags(model):
    return [m.gradient_checkpointing for m in model.modules()
            if hasattr(m, "gradient_checkpointing")]


@pytest.mark.parametrize("kind", SAMPLERS)
@pytest.mark.parametrize("train,checkpointing", [(True, True), (False, False), (True, False)])
def test_sample_restores_mode_and_checkpointing(tiny_dir, tiny, train, checkpointing, kind):
    _, processor = tiny
    model = tf.AutoModelForImageTextToText.from_pretrained(tiny_dir, dtype=torch.float32)
    if checkpointing:
        model.activation_checkpointing_enable()
    model.train(train)
    before = _gc_flags(model)
    modes = [m.training for m in model.modules()]
    out = sample(kind, model, _prompt_inputs(processor), 2, temperature=1.0, top_p=1.0,
                 max_new_tokens=5, eos_token_ids=[EOS], pad_token_id=PAD)
    assert out.dtype == torch.long and out.shape[0] == 4 and 1 <= out.shape[1] <= 5
    assert model.training == train and _gc_flags(model) == before
    assert [m.training for m in model.modules()] == modes
    assert model.is_activation_checkpointing == checkpointing


@pytest.mark.parametrize("kind", SAMPLERS)
def test_greedy_is_deterministic_and_pads_after_end(tiny, kind):
    model, processor = tiny
    prompts = _prompt_inputs(processor)
    kw = dict(temperature=0.0, top_p=1.0, max_new_tokens=6, pad_token_id=PAD)
    first = sample(kind, model, prompts, 2, eos_token_ids=[EOS], **kw)
    torch.manual_seed(123)
    assert torch.equal(first, sample(kind, model, prompts, 2, eos_token_ids=[EOS], **kw))
    assert torch.equal(first[0], first[1])  # a repeated prompt gives the same greedy answer
    # declare the 3rd greedy token of row 0 an end token: that row now stops there, then pads
    end = int(first[0, 2])
    cut = sample(kind, model, prompts, 2, eos_token_ids=[EOS, end], **kw)
    stop = int((first[0] == end).nonzero()[0])
    assert torch.equal(cut[0, :stop + 1], first[0, :stop + 1])
    assert (cut[0, stop + 1:] == PAD).all()
    assert completion_mask(cut, [EOS, end])[0].sum() == stop + 1


def test_greedy_plain_sampler_equals_generate(tiny):
    """The hand-written loop (KV cache, explicit positions) decodes what generate decodes."""
    model, processor = tiny
    kw = dict(temperature=0.0, top_p=1.0, max_new_tokens=8, eos_token_ids=[EOS], pad_token_id=PAD)
    ours = sample("plain", model, _prompt_inputs(processor), 2, **kw)
    theirs = sample("generate", model, _prompt_inputs(processor), 2, **kw)
    assert torch.equal(ours[:, :theirs.shape[1]], theirs) and (ours[:, theirs.shape[1]:] == PAD).all()


def test_sampler_logprobs_and_entropies_are_the_scorers(tiny):
    """rollout.sample's log-probs are rollout.logprobs' (the tempered policy); its entropies are
    H(pi_T) / ln V of a forward written out here."""
    model, processor = tiny
    prompts, T = _prompt_inputs(processor), 0.7
    r = rollout.sample(model, prompts, 3, temperature=T, top_p=0.9, max_new_tokens=5,
                       eos_token_ids=[EOS], pad_token_id=PAD, generator=torch.Generator().manual_seed(0),
                       stats=("entropy",))
    with torch.no_grad():
        scored = rollout.logprobs(model, prompts, r.completion_ids, r.mask, T)
    torch.testing.assert_close(r.logprobs, scored, atol=1e-5, rtol=0)
    inputs, ids = _repeat(prompts, 3), r.completion_ids
    P = inputs["input_ids"].shape[1]
    full = dict(inputs, input_ids=torch.cat([inputs["input_ids"], ids], 1),
                attention_mask=torch.cat([inputs["attention_mask"], torch.ones_like(ids)], 1),
                mm_token_type_ids=torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(ids)], 1))
    with torch.no_grad():
        logits = model(**full).logits[:, P - 1:-1] / T                        # [6, T, V]
    h = torch.distributions.Categorical(logits=logits).entropy() / math.log(logits.shape[-1])
    torch.testing.assert_close(r.stats["entropy"], h * r.mask, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", SAMPLERS)
@pytest.mark.parametrize("checkpointing", [False, True])
def test_sampled_tokens_score_finite_and_grad_reaches_weights(tiny_dir, tiny, checkpointing, kind):
    """One full GRPO step on the tiny model: sample, score, loss, backward."""
    _, processor = tiny
    model = tf.AutoModelForImageTextToText.from_pretrained(tiny_dir, dtype=torch.float32)
    if checkpointing:
        model.activation_checkpointing_enable()
    model.train()
    prompts = _prompt_inputs(processor)
    ids = sample(kind, model, prompts, 2, temperature=1.0, top_p=1.0, max_new_tokens=4,
                 eos_token_ids=[EOS], pad_token_id=PAD)
    mask = completion_mask(ids, [EOS])
    logp = rollout.logprobs(model, prompts, ids, mask)
    assert torch.isfinite(logp).all()
    adv = group_advantages(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).flatten()
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach(), adv, mask)
    loss.backward()
    assert stats["ratio"] == pytest.approx(1.0) and stats["kl"] == 0.0
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", SAMPLERS)
def test_sampling_uses_the_full_distribution(tiny_dir, tiny, kind):
    """Hub sampling defaults (here top_k=1, top_p=0.001, penalty) and transformers 5's top_k=50
    default are overridden (generate) or never read (the plain loop): sampled tokens include
    ones far down the model's ranking."""
    _, processor = tiny
    model = tf.AutoModelForImageTextToText.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    model.generation_config.update(do_sample=True, top_k=1, top_p=0.001, temperature=0.1,
                                   repetition_penalty=1.05)
    prompts = _prompt_inputs(processor)
    inputs = _repeat(prompts, 4)
    ids = sample(kind, model, prompts, 4, temperature=1.0, top_p=1.0, max_new_tokens=4,
                 eos_token_ids=[EOS], pad_token_id=PAD)
    P, T = inputs["input_ids"].shape[1], ids.shape[1]
    full = dict(inputs, input_ids=torch.cat([inputs["input_ids"], ids], 1),
                attention_mask=torch.cat([inputs["attention_mask"], torch.ones_like(ids)], 1),
                mm_token_type_ids=torch.cat([inputs["mm_token_type_ids"],
                                             torch.zeros_like(ids)], 1))
    with torch.no_grad():
        logits = model(**full).logits[:, P - 1:P - 1 + T]  # [B, T, V]
    rank = (logits > logits.gather(-1, ids[..., None])).sum(-1)  # 0 = the argmax token
    on = completion_mask(ids, [EOS]).bool()
    assert rank[on].max() >= 50  # top_k=1 would give all 0, top_k=50 all < 50
    assert not torch.equal(ids[0], ids[1])  # repeats of one prompt differ
