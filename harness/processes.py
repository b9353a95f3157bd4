"""torchrun's K ranks as the loop (ttrv.py) sees them: processes.OneProcess's calls (the
one-process default, on the method side) answered for K processes.

Each rank samples and scores its own prompts (a group never straddles ranks; None in a batch is
a zero-weight stand-in, so every rank runs the same forwards), rollouts are padded to the
longest response over the ranks, decoding goes on while any rank decodes, the loss's token
count and the step's metrics are sums and counts over the ranks, evaluation splits the test set
into contiguous shares and gathers them, and one rank's error ends every rank. The collectives
themselves are harness/distributed.py's.
"""
from harness import distributed
from processes import ONE, OneProcess  # noqa: F401  (ONE: one process, the default)


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
        names = list(roll.stats or {})
        ids, logp, mask, *stats = distributed.same_length(
            [roll.completion_ids, roll.logprobs, roll.mask] + [roll.stats[k] for k in names],
            [pad_id, 0, 0] + [0] * len(names))
        return type(roll)(ids, logp, mask, dict(zip(names, stats)))

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
