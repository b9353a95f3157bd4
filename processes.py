"""The processes a run is in, as the loop (ttrv.py) sees them: here, one.

The loop never branches on world size; it calls a `procs` object instead. `OneProcess` (`ONE`)
is one process (one GPU), every call the identity. Under torchrun the harness passes
harness/processes.py's `Ranks`, which answers the same calls for K processes: each rank samples
and scores its own prompts (None in a batch is a zero-weight stand-in, so every rank runs the
same forwards), rollouts are padded to the longest response over the ranks, decoding goes on
while any rank decodes, the loss's token count and the step's metrics are sums over the ranks,
evaluation splits the test set and gathers it, and one rank's error ends every rank.
"""
import contextlib


class OneProcess:
    """What the loop asks of the processes it runs in, for one process: every call the identity."""
    rank, count = 0, 1

    def updates(self, idx, per_update):         # [[example index, ...] per AdamW update]
        return [idx[u:u + per_update] for u in range(0, len(idx), per_update)]

    def same_length(self, roll, pad_id):        # rollouts as long as every process's
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
