"""tiny-math: a tiny text-only LM taught small sums with boxed answers, and its dataset, offline.

    load_tiny_math("test")          # "What is 12 + 7?" -> answer "19"; train and test disjoint
    tiny_math_path()                # the taught model, built on first use and cached
    python ttrv.py --model tiny-math --reward majority --eval-samples 4

What TTRL's loop needs to be seen on a CPU in minutes: a text model (Qwen2 architecture, what
Qwen2.5-Math is, through AutoModelForCausalLM) with Qwen2.5-Math's prompt format (its default
system prompt asks for \\boxed{}, so no suffix is added; generation_config stops only on
<|endoftext|>, the template ends a turn with <|im_end|>, so vlm.end_token_ids must add it), a
byte-level BPE tokenizer trained here (digits one token each), and free-form math answers.

The failure the vote can repair, put there on purpose (as tiny.py's failure of format): on a
share of the training questions (UNBOXED_SHARE, drawn independently of the question) the target
states the sum in a sentence ("the sum is 19") instead of "\\boxed{19}". Every sentence starts
with "the", so greedy decoding's first token is often "the" and its answer carries no box
(scored wrong: only boxed answers count). Among samples at temperature 1 the boxed answers are
fewer but mostly agree, so they win the vote; each unboxed response is an answer of its own,
which never wins. TTRL's majority reward then pushes the shared sentence habit down, and that
carries over to the test questions. docs/tiny-math.md says what this shows and what it does not.
"""

import hashlib
import json
import random
from pathlib import Path

import torch

from data import DataError, Example
from harness.tiny_build import PINNED, cached, default_cache_dir, pinned

# ------------------------------------------------------------------------------------ dataset
OPERANDS = range(20)            # a + b for a, b in 0..19: 400 questions
TEST_SIZE = 100                 # a fixed, seeded draw of 100 of them; the other 300 teach
SPLIT_SEED = 0                  # fixes the split (not --data-seed: the model is taught on train)
QUESTION = "What is {a} + {b}?"


def load_tiny_math(split: str = "test", data_dir=None, seed: int = 0, prompt=None) -> list[Example]:
    """The tiny-math questions of `split` ("train" or "test"), free-form math Examples (no
    options, no image, answer the sum as text). `data_dir`, `seed` and `prompt` are ignored.

    >>> test, train = load_tiny_math("test"), load_tiny_math("train")
    >>> len(test), len(train), test[0].kind, {e.question for e in test} & {e.question for e in train}
    (100, 300, 'math', set())
    """
    pairs = [(a, b) for a in OPERANDS for b in OPERANDS]
    random.Random(SPLIT_SEED).shuffle(pairs)
    parts = {"test": pairs[:TEST_SIZE], "train": pairs[TEST_SIZE:]}
    if split not in parts:
        raise DataError(f"tiny-math has splits train and test, not {split!r}.")
    return [Example(f"tiny-math-{split}-{i:03d}", QUESTION.format(a=a, b=b), [], str(a + b), None,
                    None, kind="math") for i, (a, b) in enumerate(parts[split])]


# ------------------------------------------------------------------------------------ model
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)
VOCAB_SIZE = 400
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
# Qwen2.5-Math's layout (its default system prompt, <|im_start|>/<|im_end|> turns), without its
# tool-calling branches; written for this project.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n" + SYSTEM + "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Every phrasing starts with "the" (greedy's first token is then often the sentence's) and they
# diverge after it, so identical texts cannot pool into a winning vote under --no-answer text.
UNBOXED = ["the sum is {s}", "the answer is {s}", "the total is {s}", "the result is {s}",
           "the number is {s}", "the value is {s}"]
# The share is a tuned choice: the taught P(first token of "\\boxed{") lands near 1 - share,
# just below 1/2, so greedy decoding never boxes, while the samples box almost half the time.
UNBOXED_SHARE = 0.55
TEACH = dict(steps=1000, batch_size=32, lr=3e-3, seed=0, unboxed_share=UNBOXED_SHARE)
_CORPUS = ([SYSTEM, "system\nuser\nassistant\n", QUESTION.format(a="", b=""), "\\boxed{}"] * 8
           + [u.format(s="") for u in UNBOXED] * 8)


def _tokenizer():
    """Byte-level BPE trained on _CORPUS; digits are split before BPE, so each is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", padding_side="left",
                                   model_max_length=TEXT["max_position_embeddings"],
                                   chat_template=CHAT_TEMPLATE)


@pinned
def build_tiny_math(out_dir, seed: int = 0) -> Path:
    """Write a random-weight tiny Qwen2ForCausalLM and its tokenizer to `out_dir`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tokenizer = _tokenizer()
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=end, eos_token_id=end,
                         pad_token_id=end, tie_word_embeddings=True, rope_theta=10000.0, **TEXT)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = end     # as Qwen2.5-Math's: <|endoftext|> only
    model.generation_config.pad_token_id = end
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pinned
def teach_tiny_math(model_dir, steps=TEACH["steps"], batch_size=TEACH["batch_size"],
                    lr=TEACH["lr"], seed=TEACH["seed"], unboxed_share=TEACH["unboxed_share"],
                    log=print) -> Path:
    """Supervised warm-up on the train split: cross-entropy on "\\boxed{<sum>}<|im_end|>" (on
    `unboxed_share` of the questions an UNBOXED sentence instead) after the chat prompt; AdamW,
    lr cosine-decayed from `lr` (grpo.cosine_lr, no warmup), so the taught share of boxed first
    tokens ends close to 1 - unboxed_share whatever the seed.

    Never sees the test split. Runs in a pinned child (tiny_build.PINNED), so the weights do
    not depend on the machine's CPU or thread count. Overwrites the weights in `model_dir`.
    """
    import grpo
    import vlm
    model, tokenizer = vlm.load(str(model_dir))
    train = load_tiny_math("train")
    prompts = vlm.prompt_inputs(tokenizer, [None] * len(train), [e.question for e in train])
    rng, words = random.Random(seed), random.Random(f"{seed}/unboxed")
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        grpo.set_lr(optimizer, grpo.cosine_lr(step, steps, lr, warmup_ratio=0.0))
        rows = rng.sample(range(len(train)), batch_size)
        targets = [words.choice(UNBOXED).format(s=train[i].answer)
                   if words.random() < unboxed_share else f"\\boxed{{{train[i].answer}}}"
                   for i in rows]
        prompt = {k: v[rows] for k, v in prompts.items()}                # [B, P], left padded
        ids = [tokenizer(t + "<|im_end|>", add_special_tokens=False)["input_ids"]
               for t in targets]
        width = max(map(len, ids))
        target = torch.tensor([t + [tokenizer.pad_token_id] * (width - len(t)) for t in ids])
        real = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in ids])  # [B, L]
        input_ids = torch.cat([prompt["input_ids"], target], 1)                    # [B, P+L]
        labels = torch.full_like(input_ids, -100)               # loss on the answer only
        labels[:, -width:] = target.masked_fill(real == 0, -100)
        loss = model(input_ids=input_ids, labels=labels,
                     attention_mask=torch.cat([prompt["attention_mask"], real], 1)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 200 == 0:
            log(f"teach tiny-math: step {step + 1}/{steps} loss {loss.item():.3f}")
    model.save_pretrained(model_dir)
    return Path(model_dir)


@pinned
def build_taught(out_dir, build_seed: int = 0) -> Path:
    """The tiny-math model built and taught (seed `build_seed`) in `out_dir`, in one pinned child."""
    build_tiny_math(out_dir, build_seed)
    return teach_tiny_math(out_dir, **dict(TEACH, seed=build_seed))


def tiny_math_path(cache_dir=None, log=print, build_seed: int = 0) -> Path:
    """The taught tiny-math model (what `--model tiny-math` loads), built on first use and cached
    under a key that hashes the whole recipe (sizes, tokenizer corpus, template, teaching, data,
    the pinned numerics, the torch and transformers versions); rebuilt when unreadable.
    `build_seed` seeds both the random weights and the teaching (docs/tiny-math.md's spread)."""
    import transformers
    teach = dict(TEACH, seed=build_seed)
    recipe = json.dumps([TEXT, VOCAB_SIZE, CHAT_TEMPLATE, _CORPUS, UNBOXED, teach, list(OPERANDS),
                         TEST_SIZE, SPLIT_SEED, QUESTION, build_seed, PINNED, torch.__version__,
                         transformers.__version__], sort_keys=True)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"tiny-math-qwen2-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"
    return cached(path, lambda tmp: build_taught(tmp, build_seed, log=log), "tiny-math model",
                  log)
