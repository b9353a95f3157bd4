"""ttrv's label-free rewards inside TRL: a GRPOTrainer `reward_funcs` entry that scores each
prompt's group of completions together (TTRV, TTRL's majority vote, DARE, INTUITOR's
self-certainty; also frequency, diversity and random, as --reward names them).

    from trl import GRPOConfig, GRPOTrainer
    from harness.trl_rewards import GroupReward
    vote = GroupReward("majority", num_generations=8)                  # TTRL: the vote alone
    dare = GroupReward("dare", num_generations=8, model=model, tokenizer=tokenizer)
    GRPOTrainer(model=model, reward_funcs=vote, train_dataset=dataset,   # a "prompt" column
                args=GRPOConfig(num_generations=8, ...)).train()

How TRL 1.x calls a reward function (GRPOTrainer._calculate_rewards): once per generation
batch of each process, with the keyword arguments `prompts`, `completions` (texts; for a
conversational dataset, lists of messages), `completion_ids` (token-id lists, unpadded) and
every other column of the dataset (a list, one entry per completion), plus trainer_state,
log_extra and log_metric; it must return one float per completion. Its RepeatSampler puts the
num_generations completions of one prompt next to each other, so rows g*G .. g*G + G - 1 are
one group: the group votes through ttrv's own ttrv.score (answers.vote_keys, then
rewards.compute_rewards). Gold answers are never read (a dataset may keep an "answer" column for
its own logs).

The question's kind: a dataset column "options" (a list of option texts) makes it multiple
choice, read by letter; otherwise it is a math question read from its last \\boxed{}.
DARE (its u: mean token entropy / ln V) and self-certainty (INTUITOR: the mean over the
completion's tokens of KL(U || pi), rollout.self_certainty) need the policy's distribution at
every completion token: one forward of `model` per group over prompt + completions, no
grad, at `temperature` (pass GRPOConfig's, the distribution TRL samples from), the logits of
the completion positions only. Pass the model object GRPOTrainer trains (on one process it is
the same object; else set `reward.model = trainer.model` after building the trainer). The loop
(ttrv.py) never imports TRL; only this module and its test do.
"""
from __future__ import annotations

import numpy as np
import torch

import data
import rewards
import rollout
import ttrv

STATS = rewards.TOKEN_STAT       # the per-token statistic each reward reads (rollout.TOKEN_STATS)
NAMES = tuple(rewards.REWARDS)


class GroupReward:
    """A TRL reward function: one ttrv reward, each prompt's `num_generations` completions
    scored together. `alpha` is eq. 7's, `match` majority's ("key", or "grade": TTRL's rule),
    `no_answer` the vote's policy for responses without an answer; dare_alpha / dare_tau as
    --dare-alpha / --dare-tau; `seed` draws --reward random's rewards."""

    def __init__(self, name: str, num_generations: int, *, model=None, tokenizer=None,
                 temperature: float = 1.0, alpha: float = 0.75, match: str = "key",
                 no_answer: str = "own", dare_alpha: float = 0.5, dare_tau: float = 0.05,
                 seed: int = 0):
        if name not in NAMES:
            raise ValueError(f"unknown reward {name!r}; pass one of: {', '.join(NAMES)}.")
        if num_generations < 2:
            raise ValueError("num_generations must be at least 2: a group of one has nothing "
                             "to vote with; pass GRPOConfig's num_generations.")
        self.stat = STATS.get(name)
        if self.stat and (model is None or tokenizer is None):
            raise ValueError(f"reward {name!r} reads the policy's distribution at every token; "
                             "pass model= (the model GRPOTrainer trains) and tokenizer=.")
        self.name, self.num_generations, self.model, self.tokenizer = (
            name, num_generations, model, tokenizer)
        self.temperature = temperature
        self.hp = ttrv.Settings(reward=name, alpha=alpha, majority_match=match,
                                no_answer=no_answer, dare_alpha=dare_alpha, dare_tau=dare_tau)
        self.rng = np.random.default_rng(seed)
        self.__name__ = f"ttrv_{name.replace('-', '_')}"      # TRL logs rewards/<__name__>

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float]:
        G = self.num_generations
        if len(completions) % G:
            raise ValueError(f"got {len(completions)} completions, not whole groups of "
                             f"num_generations={G}; pass GroupReward the num_generations of "
                             "GRPOConfig (and under several processes a per-process batch of "
                             "whole groups).")
        texts = [completion_text(c) for c in completions]
        stats = self.token_stats(prompts, completion_ids) if self.stat else None   # [R]
        out = []
        for start in range(0, len(texts), G):
            group = slice(start, start + G)
            if any(p != prompts[start] for p in prompts[group]):
                raise ValueError(f"completions {start}-{start + G - 1} answer different prompts; "
                                 "num_generations must be GRPOConfig's, whose completions of "
                                 "one prompt are consecutive.")
            out += self.score(texts[group], question(columns, start),
                              None if stats is None else stats[group])
        return out

    def score(self, texts, example, stats) -> list[float]:
        """One group's rewards: ttrv.score's, the loop's vote."""
        return ttrv.score(texts, example, self.hp, self.rng, stats)[0].tolist()

    @torch.no_grad()
    def token_stats(self, prompts, completion_ids) -> list[float]:
        """Each completion's mean per-token statistic (rollout.TOKEN_STATS[self.stat]) of
        pi_T(. | prompt, completion_<t): one forward per group over its prompt + completions,
        right-padded (a padded position follows every real one, so it changes none of them)."""
        if completion_ids is None:
            raise ValueError(f"reward {self.name!r} needs completion_ids, which TRL passes.")
        device = next(self.model.parameters()).device
        statistic, out, G = rollout.TOKEN_STATS[self.stat], [], self.num_generations
        with rollout.eval_mode(self.model):
            for start in range(0, len(prompts), G):
                prompt = prompt_ids(self.tokenizer, prompts[start])      # one prompt a group
                ids = [list(x) for x in completion_ids[start:start + G]]
                T = max(map(len, ids))
                if T == 0:
                    out += [0.0] * len(ids)
                    continue
                rows = torch.tensor([prompt + x + [0] * (T - len(x)) for x in ids],
                                    device=device)                                # [G, P+T]
                mask = (torch.arange(len(prompt) + T, device=device)[None]
                        < torch.tensor([[len(prompt) + len(x)] for x in ids], device=device))
                logits = self.model(input_ids=rows, attention_mask=mask.long(), use_cache=False,
                                    logits_to_keep=T + 1).logits[:, :-1]         # [G, T, V]
                stat = statistic(torch.log_softmax(logits.float() / self.temperature, dim=-1))
                out += [float(stat[i, :len(x)].mean()) if x else 0.0 for i, x in enumerate(ids)]
        return out


def prompt_ids(tokenizer, prompt) -> list[int]:
    """The prompt's token ids as TRL makes them: the chat template with its generation prompt
    for a conversational prompt (a list of messages), the tokenizer's own call for text."""
    if isinstance(prompt, str):
        return list(tokenizer(text=prompt)["input_ids"])
    out = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]
    return list(out[0] if out and isinstance(out[0], list) else out)


def completion_text(completion) -> str:
    """A completion's text: itself, or the contents of its messages (conversational)."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if isinstance(m.get("content"), str))


def question(columns: dict, i: int) -> data.Example:
    """What row i asks, for reading its answers: multiple choice if an "options" column gives
    it options, else math; never its gold answer."""
    options = list(columns.get("options", [None] * (i + 1))[i] or [])
    return data.Example(f"trl-{i}", "", options, None, None, None,
                        kind="choice" if options else "math")
