"""More than one process (torchrun): every line of distributed code in the project.

    torchrun --nproc-per-node 8 ttrv.py --model OpenGVLab/InternVL3-8B-hf --dataset resisc45 ...

`init` joins the process group that torchrun describes in the environment (nccl on CUDA, gloo
on the CPU). `shard` applies PyTorch's FSDP2 (`fully_shard`) to every decoder and vision block,
then to the root: each of K processes keeps 1/K of the fp32 parameters, gradients and AdamW
states, and gathers a block's full weights just for its forward/backward. On the GPU, FSDP's
MixedPrecisionPolicy computes in bf16 from the fp32 master weights and reduces gradients in
fp32; on the CPU (gloo) everything is fp32.

One process without torchrun: `init` returns False, no process group exists, nothing is
wrapped, and the loop runs with `OneProcess` (every call the identity). Under torchrun it runs with `Ranks` (below),
which answers the same calls:

ttrv.py's contract under K processes (`Ranks`): each rank samples and scores its own
prompts (a group never straddles ranks); one AdamW update covers `prompts_per_update` prompts
spread over the ranks, its loss normalised by the token count of all of them (all-reduced, as
verl does), so the update equals the single-process update over the same prompts. Every rank
must run the same number of forwards (FSDP gathers weights collectively): ranks with fewer
prompts in an update run a zero-weight copy, response lengths are padded to the longest over
the ranks (masked), and decoding loops stop only when every rank is done. The step's metrics
are sums and counts over the ranks (a rank holding only stand-ins adds nothing), not means of
the ranks' means; evaluation splits the test set into contiguous shares and gathers them.

What it leaves out: tensor/sequence parallelism, CPU offload, multi-node launch details
(torchrun handles them), sharded checkpoints (we save one ordinary save_pretrained checkpoint).
Tested on the CPU with gloo and 2 processes only; multi-GPU NCCL is untested.
"""

import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist


def init(device: str) -> bool:
    """Join torchrun's process group (nccl on cuda, gloo on cpu); False when run without it."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


# ------------------------------------------------------------------------------- sharding

def shard(model, bf16: bool):
    """FSDP2 on each block named in the model's `_no_split_modules` (decoder layers, vision
    blocks: found generically, any family), then on the root (embeddings, head, norms).

    bf16: compute in bf16 from fp32 master weights, reduce gradients in fp32. The model must
    already be on its device. Returns the same model object, now sharded in place.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    device = next(model.parameters()).device.type
    mesh = init_device_mesh(device, (world(),))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if bf16 else MixedPrecisionPolicy())
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    # reshard after every forward, the root too (FSDP's default keeps the root gathered after a
    # forward: then an evaluation before training would leave full tensors in parameters()).
    options = dict(mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    for module in list(model.modules()):
        if type(module).__name__ in blocks:
            fully_shard(module, **options)
    fully_shard(model, **options)
    model._is_fsdp_managed_module = True   # transformers' generate then syncs ranks (synced_gpus)
    # generate would encode the images by calling the vision tower directly, outside the root's
    # forward, where the root's own parameters (e.g. the patch embedding) are still sharded; this
    # makes it pass pixel_values to the forward instead (transformers 5's behaviour before that).
    model._supports_mm_encoder_outputs = lambda: False
    return model


def save_pretrained(model, path) -> None:
    """One ordinary save_pretrained checkpoint; under FSDP the full weights are gathered to
    rank 0 (collective: every rank calls this) and rank 0 writes them."""
    if not active():
        model.save_pretrained(path)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    if is_main():
        model.save_pretrained(path, state_dict=state)
    dist.barrier()


# ------------------------------------------------------------------------------- collectives

def _device():
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")


def all_sum(x) -> float:
    """Sum of a number (or 0-d tensor) over all ranks."""
    t = torch.as_tensor(x, dtype=torch.float64).clone()
    if not active():
        return float(t)
    t = t.to(_device())
    dist.all_reduce(t)
    return float(t)


def any_rank(flag) -> bool:
    """True if `flag` is true on any rank (a decoding loop continues while any rank decodes)."""
    return all_sum(float(bool(flag))) > 0 if active() else bool(flag)


def max_over_ranks(x: int) -> int:
    if not active():
        return int(x)
    t = torch.tensor(int(x), device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def gather(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (pickled; small objects only)."""
    if not active():
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def on_main(fn, *args):
    """fn(*args) on rank 0 only; every rank gets its result, or raises its exception."""
    if not active():
        return fn(*args)
    result = error = None
    if is_main():
        try:
            result = fn(*args)
        except Exception as e:  # noqa: BLE001  (re-raised on every rank below)
            error = e
    box = [(result, error)]
    dist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise error
    return result


def scratch_dir(out: Path) -> Path:
    """`out` on rank 0; elsewhere a private temporary directory (ranks > 0 write nothing real)."""
    return out if is_main() else Path(tempfile.mkdtemp(prefix=f"ttrv-rank{rank()}-"))


def remove_scratch(path: Path, out: Path) -> None:
    if path != out:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------- splitting work

def share(items: list, pad=None) -> list:
    """This rank's share of `items`, item i going to rank i % K, padded with `pad` (a zero-weight
    stand-in) so every rank gets ceil(len / K). One process: `items` itself.

    Example, K = 2: share([10, 11, 12]) is [10, 12] on rank 0 and [11, None] on rank 1;
    in one process it is [10, 11, 12].
    """
    K = world()
    mine = items[rank()::K]
    return mine + [pad] * (-(-len(items) // K) - len(mine))


def contiguous_share(items: list) -> list:
    """Rank r's slice of `items` (ceil(len / K) each, the last ranks padded with items[0]): every
    rank gets the same count, so all run the same number of batches. `gather_share` undoes it."""
    K, per = world(), -(-len(items) // world())
    mine = items[rank() * per:(rank() + 1) * per]
    return mine + items[:1] * (per - len(mine)) if K > 1 else mine


def gather_share(mine: list, total: int) -> list:
    """Inverse of `contiguous_share`: every rank's slice, in order, padding dropped."""
    return [x for part in gather(mine) for x in part][:total]


def same_length(tensors, fills):
    """Pad [rows, T] tensors on the right to the longest T over the ranks (masked columns);
    None stays None."""
    T = max_over_ranks(tensors[0].shape[1])
    return [torch.nn.functional.pad(t, (0, T - t.shape[1]), value=v)
            if t is not None and t.shape[1] < T else t for t, v in zip(tensors, fills)]


# ------------------------------------------------------------------------------- the loop's contract

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

    def mean(self, values, weights):            # weighted mean over all processes' values
        return sum(v * w for v, w in zip(values, weights)) / sum(weights)

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


ONE = OneProcess()


class Ranks(OneProcess):
    """The loop's calls under torchrun: what it needs from K processes (the contract above)."""

    def __init__(self):
        super().__init__()
        self.rank, self.count = rank(), world()

    def updates(self, idx, per_update):
        """This rank's prompts of each AdamW update, padded with None (a stand-in)."""
        return [share(idx[u:u + per_update]) for u in range(0, len(idx), per_update)]

    def same_length(self, roll, pad_id):
        """Rollouts padded to the longest response over the ranks: the same number of forwards."""
        return type(roll)(*same_length([roll.completion_ids, roll.logprobs, roll.entropies,
                                        roll.mask], [pad_id, 0, 0, 0]))

    def any_alive(self, alive):
        return any_rank(alive.any())

    def sum(self, x):
        return all_sum(x)

    def mean(self, values, weights):
        """The weighted mean over every rank's values: all-summed numerator and weight."""
        total = all_sum(sum(w for w in weights))
        return all_sum(sum(v * w for v, w in zip(values, weights) if w)) / total if total else float("nan")

    def share(self, items):
        return contiguous_share(items)

    def gather(self, result, total):
        import eval as evaluation
        return evaluation.EvalResult.of(gather_share(result.predictions, total))

    def on_main(self, fn, *args):
        return on_main(fn, *args)

    def shard(self, policy, ref_model, bf16):
        # both gathered as bf16 (FSDP's param_dtype): the reference computes as the policy does
        shard(policy, bf16), shard(ref_model, bf16)

    def save(self, model, path):
        save_pretrained(model, path)
