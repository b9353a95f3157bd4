"""The processes a run is in, as the loop (ttrv.py) sees them: one, or torchrun's K ranks.

The loop never branches on world size; it calls a `procs` object instead. `OneProcess` (`ONE`)
is one process, every call the identity. `Ranks` is the contract under torchrun: each rank
samples and scores its own prompts (a group never straddles ranks; None in a batch is a
zero-weight stand-in, so every rank runs the same forwards), rollouts are padded to the
longest response over the ranks, decoding goes on while any rank decodes, the loss's token
count and the step's metrics are sums and counts over the ranks, evaluation splits the test
set into contiguous shares and gathers them, and one rank's error ends every rank. The
collectives themselves are harness/distributed.py's.
"""
import contextlib

from harness import distributed


class OneProcess:
    """What the loop (ttrv.py) asks of the processes it runs in, for one process (one GPU):
    every call is the identity. `Ranks` answers the same calls under torchrun."""
    rank, count = 0, 1

    def updates(self, idx, per_update):         # [[example index, ...] per AdamW update]
        return [idx[u:u + per_update] for u in range(0, len(idx), per_update)]

    def same_length(self, roll, pad_id):
        return roll

    def any_alive(self, alive):                 # does any row still decode?
        return bool(alive.any())

    def sum(self, x):
        return float(x)

    def mean(self, pairs):                      # {key: (sum, count)} -> {key: sum / count}
        return {key: s / c if c else float("nan") for key, (s, c) in pairs.items()}

    def share(self, items):                     # this process's share of an evaluation
        return items

    def gather(self, result, total):            # an evaluation of every process's share
        return result

    def on_main(self, fn, *args):
        return fn(*args)

    def shard(self, policy, ref_model, bf16):
        pass

    def save(self, model, path):
        model.save_pretrained(path)

    def checked(self, fn, *args):               # fn(*args); an error ends every process
        return fn(*args)

    def gathered(self, model):                  # full weights while sampling (FSDP)
        return contextlib.nullcontext(model)

    def publish_error(self, message):           # tell the other processes why this one ends
        return message

    def peer_error(self):                       # why another process ended, or None
        return None


ONE = OneProcess()


class Ranks(OneProcess):
    """The loop's calls under torchrun: what it needs from K processes (the contract above)."""

    def __init__(self):
        super().__init__()
        self.rank, self.count = distributed.rank(), distributed.world()

    def updates(self, idx, per_update):
        """This rank's prompts of each AdamW update, padded with None (a stand-in)."""
        return [distributed.share(idx[u:u + per_update]) for u in range(0, len(idx), per_update)]

    def same_length(self, roll, pad_id):
        """Rollouts padded to the longest response over the ranks: the same number of forwards."""
        return type(roll)(*distributed.same_length([roll.completion_ids, roll.logprobs,
                                                    roll.entropies,
                                        roll.mask], [pad_id, 0, 0, 0]))

    def any_alive(self, alive):
        return distributed.any_rank(alive.any())

    def sum(self, x):
        return distributed.all_sum(x)

    def mean(self, pairs):
        return distributed.mean_over_ranks(pairs)

    def share(self, items):
        return distributed.contiguous_share(items)

    def gather(self, result, total):
        import eval as evaluation
        return evaluation.EvalResult.of(distributed.gather_share(result.predictions, total))

    def on_main(self, fn, *args):
        return distributed.on_main(fn, *args)

    def shard(self, policy, ref_model, bf16):
        # both gathered as bf16 (FSDP's param_dtype): the reference computes as the policy does
        distributed.shard(policy, bf16), distributed.shard(ref_model, bf16)

    def save(self, model, path):
        distributed.save_pretrained(model, path)

    def checked(self, fn, *args):
        return distributed.checked(fn, *args)

    def gathered(self, model):
        return distributed.gathered(model)

    def publish_error(self, message):
        return distributed.publish_error(message)

    def peer_error(self):
        return distributed.peer_error()
