"""Greedy evaluation on the test questions: the paper's accuracy numbers; with K samples per
question also TTRL's avg@K and maj@K.

    python eval.py --model runs/<run>/model --dataset shapes
    python eval.py --model Qwen/Qwen2.5-VL-3B-Instruct --dataset resisc45 --data-dir NWPU-RESISC45.zip

The paper evaluates by greedy decoding on the whole test set, before and after adaptation
(Appendix A). Prompts are batched with left padding; a response counts as correct when the
option letter extracted from it (answers.extract_choice) is the right one, and as unparseable
when no letter can be extracted. Counting questions (no options, e.g. Capture) are scored by
1 - symmetric percentage error on the extracted number (data.count_score); free-form math
questions by the last \\boxed{} answer's equivalence to the gold one (answers.py).

With `samples=K` (TTRL's evaluation: K = 16 at temperature 0.6, top-p 0.95) each question also
gets K sampled responses (shared_prefix.sample): avg@K is their mean score (what TTRL reports as
"pass@1"), maj@K the score of their plain majority answer under the same grader, pass@k the
unbiased estimate of Chen et al. (2021) from the K (pass_at_k; 0/1-graded questions only).
The command line is harness/eval_cli.py's.
"""
if __name__ == "__main__":           # the command line is the harness's (flags before torch)
    from harness import cli, eval_cli
    raise SystemExit(cli.command(eval_cli.main))

import json
import math
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

import answers
import data
import grpo
import vlm


@dataclass
class EvalResult:
    accuracy: float            # mean score: accuracy, or 1 - sMAPE for counting questions
    correct: float
    total: int
    unparseable: int
    predictions: list[dict] = field(repr=False)  # one dict per example, in dataset order
    letter_forced: float | None = None  # see letter_forced_accuracy; None: not defined here
    avg_at_k: float | None = None       # mean score of the K samples (TTRL's "pass@1"); None: K = 0
    maj_at_k: float | None = None       # score of the K samples' majority answer
    pass_at_k: dict | None = None       # k -> mean unbiased pass@k (k = 1, 2, 4, ..., K)

    @classmethod
    def of(cls, predictions: list[dict]) -> "EvalResult":
        """The sums over per-example predictions (also over all ranks' gathered predictions)."""
        n = max(len(predictions), 1)
        correct = sum(p["correct"] for p in predictions)

        def mean(key):
            values = [p.get(key) for p in predictions]
            return None if not values or None in values else sum(values) / n
        counts = [(p.get("samples"), p.get("samples_correct")) for p in predictions]
        passes = None if not counts or any(c is None for _, c in counts) else {
            k: sum(pass_at_k(m, c, k) for m, c in counts) / n for k in sorted(  # 1, 2, 4, .., K
                {counts[0][0], *(2 ** i for i in range(counts[0][0].bit_length()))})}
        return cls(correct / n, correct, len(predictions),
                   sum(p["prediction"] is None for p in predictions), predictions,
                   mean("letter_forced"), mean("avg_at_k"), mean("maj_at_k"), passes)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, eq. 1): with n samples of which c are right, the chance
    that k of them drawn without replacement hold a right one, 1 - C(n - c, k) / C(n, k),
    computed as 1 - prod_{i = n-c+1}^{n} (1 - k / i) (no large binomials). pass@1 = c / n.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 3, 2), pass_at_k(4, 0, 4)
    (0.25, 0.5, 1.0, 0.0)
    """
    return 1.0 if n - c < k else 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


@torch.no_grad()
def evaluate(model, processor, examples, *, batch_size: int = 32, max_new_tokens: int = 1024,
             autocast=None, progress: bool = True, desc: str = "eval", prepare=None,
             bucket: bool = True, checked=None, samples: int = 0, temperature: float = 0.6,
             top_p: float = 0.95, seed: int = 0, any_alive=None) -> EvalResult:
    """Greedy answers for every example; accuracy over all of them (unparseable = wrong).

    The same generate call keeps the option letters' logits of its first step, so the
    letter-forced accuracy (`EvalResult.letter_forced`) costs no second forward. With `bucket`
    the batches hold prompts of similar size (`length_order`), so less padding; the predictions
    come back in dataset order either way (each prompt's computation is the same, only its
    masked padding differs). `prepare(processor, batches)` yields each batch's PromptInputs in
    order (harness/batches.py: DataLoader workers prepare the next batches while the model
    decodes; None: each batch when it is reached). `checked(fn)` runs each batch's preparation (under
    torchrun procs.checked: a corrupt image on one process ends every process with its error).
    `samples` K > 0 also draws K responses per example at `temperature` / `top_p` (seeded by
    `seed`; `any_alive` as for shared_prefix.sample) for avg@K and maj@K.
    """
    device = next(model.parameters()).device
    end_ids, pad_id = vlm.end_token_ids(model, processor), vlm.pad_token_id(processor)
    letters = letter_token_ids(processor, examples)                               # [K] or None
    order = length_order(examples) if bucket else list(range(len(examples)))
    batches = [[examples[i] for i in order[s:s + batch_size]]
               for s in range(0, len(examples), batch_size)]
    prepared = (prepare or _each)(processor, batches)
    predictions = [None] * len(examples)
    generator = torch.Generator(device).manual_seed(seed) if samples else None
    for b, batch in enumerate(tqdm(batches, desc=desc, disable=not progress, leave=False)):
        inputs = vlm.to_device((checked or _call)(next, prepared), device)
        with autocast or torch.autocast(device.type, enabled=False):
            out = generate(model, inputs, temperature=0.0, top_p=1.0,
                              max_new_tokens=max_new_tokens, eos_token_ids=end_ids,
                              pad_token_id=pad_id, first_step_ids=letters,
                              suppress_token_ids=vlm.placeholder_token_ids(model))
        ids, first = out if letters is not None else (out, None)  # [B, T], [B, K]
        lengths = grpo.completion_mask(ids, end_ids).sum(1).long().tolist()  # tokens [B]
        sampled = (sample_scores(model, processor, inputs, batch, samples, temperature, top_p,
                                 max_new_tokens, generator, any_alive, autocast)
                   if samples else [{}] * len(batch))
        for i, (example, text) in enumerate(zip(batch, vlm.decode(processor, ids))):
            forced = {} if first is None else dict(letter_forced=forced_correct(first[i], example))
            predictions[order[b * batch_size + i]] = dict(                  # dataset order
                id=example.id, response=text, answer=example.answer, **score(text, example),
                length=lengths[i], level=example.level, **forced, **sampled[i])
    return EvalResult.of(predictions)


def _call(fn, *args):
    return fn(*args)


def _each(processor, batches):
    return (vlm.example_inputs(processor, batch) for batch in batches)


def length_order(examples) -> list[int]:
    """Indices of `examples` sorted by prompt size: image pixels (the image tokens follow
    them), then question length; stable, so equal sizes keep dataset order. Reads only image
    headers (data.image_size). Batches cut from this order need little padding."""
    def size(i):
        width, height = data.image_size(examples[i])
        return width * height, len(examples[i].question)
    return sorted(range(len(examples)), key=size)


def sample_scores(model, processor, inputs, batch, k, temperature, top_p, max_new_tokens,
                  generator, any_alive, autocast) -> list[dict]:
    """avg@k and maj@k of each example of `batch`: k responses each from shared_prefix.sample."""
    import shared_prefix
    device = inputs["input_ids"].device
    with autocast or torch.autocast(device.type, enabled=False):
        roll = shared_prefix.sample(model, inputs, k, temperature=temperature, top_p=top_p,
                                    max_new_tokens=max_new_tokens, generator=generator,
                                    eos_token_ids=vlm.end_token_ids(model, processor),
                                    pad_token_id=vlm.pad_token_id(processor),
                                    suppress_token_ids=vlm.placeholder_token_ids(model),
                                    any_alive=any_alive)                               # [B*k, T]
    texts = vlm.decode(processor, roll.completion_ids)
    out = []
    for b, example in enumerate(batch):
        found = [answers.extract(t, example) for t in texts[b * k:(b + 1) * k]]
        grades = [answers.grade(a, example) for a in found]      # pass@k: 0/1 grades only
        out.append(dict(avg_at_k=sum(grades) / k, samples=k,
                        samples_correct=None if example.kind == "count" else int(sum(grades)),
                        maj_at_k=answers.grade(answers.majority(found, example), example)))
    return out


@torch.no_grad()
def generate(model, prompt_inputs: dict, *, temperature: float, top_p: float, max_new_tokens: int,
           eos_token_ids: list[int], pad_token_id: int, suppress_token_ids: list[int] = (),
           first_step_ids: list[int] | None = None):
    """Completions for already-repeated prompt rows, from ONE generate call: LongTensor [B, T].

    With `first_step_ids` it returns (completions, logits [B, K] of the FIRST step at those K
    token ids), kept by `_FirstStep` during the same generate call: `evaluate` reads the
    option letters' logits there (letter-forced accuracy) without a second forward.

    Only the new tokens are returned (the P prompt columns are cut); each row is pad_token_id
    after its first end token; T <= max_new_tokens is the longest row. temperature == 0 is greedy
    (evaluation); otherwise multinomial sampling at `temperature` with nucleus `top_p`.

    Everything else that would change the sampling distribution is switched off explicitly:
    transformers 5 fills unset options with global defaults (top_k=50!) and hub checkpoints ship
    their own (Qwen's: repetition penalty, small top_k/top_p). With top_k=0 and no penalty the
    samples come from softmax(logits / temperature), the distribution the log-probs
    score (the official code samples with vLLM, top_k=-1, top_p=1). `suppress_token_ids`
    (the image/video placeholders, vlm.placeholder_token_ids) are never drawn: a response
    holding one would be read as an image slot by the next forward.

    Around generate the model is put in eval mode with activation (gradient) checkpointing off,
    which in train mode makes the layers drop the KV cache; both are restored afterwards to
    exactly what they were, by saving and restoring each module's `gradient_checkpointing` flag
    (this keeps the original checkpoint function and every_n_layers, and avoids the deprecated
    gradient_checkpointing_enable/disable of transformers 5).
    """
    was_training = model.training
    flags = {m: m.gradient_checkpointing for m in model.modules()
             if hasattr(m, "gradient_checkpointing")}
    for m in flags:
        m.gradient_checkpointing = False
    model.eval()
    try:
        options = dict(do_sample=temperature > 0, repetition_penalty=1.0,
                       suppress_tokens=list(suppress_token_ids) or None)
        if temperature > 0:
            options.update(temperature=temperature, top_p=top_p, top_k=0)
        first = _FirstStep(first_step_ids) if first_step_ids is not None else None
        out = model.generate(**prompt_inputs, **options, max_new_tokens=max_new_tokens,
                             eos_token_id=list(eos_token_ids), pad_token_id=pad_token_id,
                             logits_processor=[first] if first else None,
                             use_cache=True)                                       # [B, P+T]
    finally:
        for m, flag in flags.items():
            m.gradient_checkpointing = flag
        model.train(was_training)
    completion = out[:, prompt_inputs["input_ids"].shape[1]:]                      # [B, T]
    keep = grpo.completion_mask(completion, eos_token_ids).bool()
    completion = torch.where(keep, completion, torch.full_like(completion, pad_token_id))
    return completion if first is None else (completion, first.logits)


class _FirstStep:
    """A generate logits processor that keeps the first step's logits at `ids` ([B, K], float32)
    and changes nothing. Only K columns of one step are kept, never [B, V] per step."""

    def __init__(self, ids):
        self.ids, self.logits = torch.as_tensor(list(ids), dtype=torch.long), None

    def __call__(self, input_ids, scores):                                          # [B, V]
        if self.logits is None:
            self.logits = scores[:, self.ids.to(scores.device)].float()             # [B, K]
        return scores


def letter_token_ids(processor, examples) -> list[int] | None:
    """The token ids of the option letters A, B, ... (as many as the most options), or None
    when a question has no options (counting) or a letter is not a single token."""
    if not examples or any(not e.options for e in examples):
        return None
    ids = [vlm.tokenizer_of(processor).encode(letter, add_special_tokens=False)
           for letter in data.LETTERS[:max(len(e.options) for e in examples)]]
    return None if any(len(i) != 1 for i in ids) else [i[0] for i in ids]


def forced_correct(letter_logits, example) -> bool:
    """Whether the argmax over this question's own option letters' logits [K] is its answer."""
    return data.LETTERS[int(letter_logits[:len(example.options)].argmax())] == example.answer


@torch.no_grad()
def letter_forced_accuracy(model, processor, examples, *, batch_size: int = 32,
                           autocast=None) -> float | None:
    """Accuracy when the model must pick an option letter: the argmax over the option letters'
    logits at the first response position (no decoding, so no chance to answer off-format).

    Greedy accuracy below this is lost to format, not to knowledge. None when a question has no
    options (counting) or an option letter is not a single token of this tokenizer. `evaluate`
    gets the same number from its own decode (EvalResult.letter_forced); this one needs no
    decode at all.
    """
    letters = letter_token_ids(processor, examples)
    if letters is None:
        return None
    letters = torch.tensor(letters)                                              # [K]
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        inputs = vlm.to_device(vlm.prompt_inputs(processor, [e.image() for e in batch],
                                                 [e.question for e in batch]), device)
        with autocast or torch.autocast(device.type, enabled=False):
            logits = model(**inputs, logits_to_keep=1).logits[:, -1]   # [B, V], left-padded
        choice = logits.float()[:, letters.to(device)]                               # [B, K]
        correct += sum(forced_correct(row, example) for example, row in zip(batch, choice))
    return correct / len(examples)


def score(text: str, example) -> dict:
    """The extracted prediction and its score (answers.py): 1/0 for multiple choice and math; for
    a counting question 1 - symmetric percentage error, whose mean over a dataset is 1 - sMAPE."""
    prediction = answers.extract(text, example)
    value = answers.grade(prediction, example)
    return dict(prediction=prediction, correct=value if example.kind == "count" else bool(value))


def write_predictions(path, result: EvalResult) -> None:
    with open(path, "w") as f:
        for p in result.predictions:
            f.write(json.dumps(p) + "\n")
