"""More than one process (torchrun): every line of distributed code in the project.

    torchrun --nproc-per-node 8 ttrv.py --model OpenGVLab/InternVL3-8B-hf --dataset resisc45 ...

`init` joins the process group that torchrun describes in the environment (nccl on CUDA, gloo
on the CPU). `shard` applies PyTorch's FSDP2 (`fully_shard`) to every decoder and vision block,
then to the root: each of K processes keeps 1/K of the fp32 parameters, gradients and AdamW
states, and gathers a block's full weights just for its forward/backward. On the GPU, FSDP's
MixedPrecisionPolicy computes in bf16 from the fp32 master weights and reduces gradients in
fp32; on the CPU (gloo) everything is fp32.

One process without torchrun: `init` returns False, no process group exists, nothing is
wrapped, and the loop runs with processes.py's `OneProcess` (every call the identity).
Under torchrun it runs with harness/processes.py's `Ranks`, which answers the same calls with the functions here.

ttrv.py's contract under K processes (harness/processes.py `Ranks`): each rank samples and scores its own
prompts (a group never straddles ranks); one AdamW update covers `prompts_per_update` prompts
spread over the ranks, its loss normalised by the token count of all of them (all-reduced, as
verl does), so the update equals the single-process update over the same prompts. Every rank
must run the same number of forwards (FSDP gathers weights collectively): ranks with fewer
prompts in an update run a zero-weight copy, response lengths are padded to the longest over
the ranks (masked), and decoding loops stop only when every rank is done. The step's metrics
are sums and counts over the ranks, divided once (`Ranks.mean`; a stand-in counts 0), not means of
the ranks' means; evaluation splits the test set into contiguous shares and gathers them.
Sampling and evaluation run inside `gathered` (each block gathered once, not per token). An
error on one rank ends every rank with it (`checked` before a collective; otherwise
`publish_error` / `peer_error` through torchrun's store), never a hang waiting for it.

What it leaves out: tensor/sequence parallelism, CPU offload, multi-node launch details
(torchrun handles them), sharded checkpoints (we save one ordinary save_pretrained checkpoint).
Tested on the CPU with gloo and 2 processes only; multi-GPU NCCL is untested.
"""

import contextlib
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


def mean_over_ranks(pairs: dict) -> dict:
    """{key: (sum, count)} of this rank -> {key: sum over ranks / count over ranks}.

    The mean over every rank's items, where a rank with none (only zero-weight stand-ins)
    counts 0; not the mean of the ranks' means, which is NaN when a rank has nothing and is
    biased when the ranks hold different counts. NaN for a key no rank has any item of. One
    process: sum / count. Every rank must pass the same keys in the same order (collective).

    >>> mean_over_ranks(dict(reward=(1.5, 3), entropy=(0.0, 0)))
    {'reward': 0.5, 'entropy': nan}
    """
    t = torch.tensor([float(v) for pair in pairs.values() for v in pair], dtype=torch.float64)
    if active():
        t = t.to(_device())
        dist.all_reduce(t)
        t = t.cpu()
    sums, counts = t[0::2].tolist(), t[1::2].tolist()
    return {key: s / c if c else float("nan") for key, s, c in zip(pairs, sums, counts)}


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


# ------------------------------------------------------------------------------- full weights while sampling

@contextlib.contextmanager
def gathered(model):
    """The model's full weights kept gathered inside the block, resharded when it ends.

    FSDP2 reshards every block after its forward (reshard_after_forward, `shard`), so a decode
    loop would all-gather the whole model again for every generated token; inside, each block
    is gathered by its first forward and stays, one all-gather per block for the whole
    rollout or evaluation. Costs the full (bf16 under --precision bf16) weights on every GPU
    while inside. Outside FSDP (no FSDPModule in `model`) it does nothing.
    """
    from torch.distributed.fsdp import FSDPModule
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for m in modules:
            m.set_reshard_after_forward(True, recurse=False)
            m.reshard()


# ------------------------------------------------------------------------------- one rank's error, on every rank

def checked(fn, *args):
    """fn(*args) on every rank (collective); if it raised anywhere, every rank raises: the
    failing rank its own exception, the others the same kind (DataError, ModelError, else
    RuntimeError) saying "rank r: <message>". Wraps rank-local work (preparing a batch) that
    comes right before a collective, which would otherwise wait for the failed rank forever."""
    try:
        result, error = fn(*args), None
    except Exception as e:  # noqa: BLE001  (re-raised below, on every rank)
        result, error = None, e
    if not any_rank(error is not None):
        return result
    kind = type(error).__name__ if error is not None else None
    reports = gather(None if error is None else (kind, str(error)))
    if error is not None:
        raise error
    import data
    import vlm
    r, (kind, text) = next((r, x) for r, x in enumerate(reports) if x is not None)
    known = dict(DataError=data.DataError, ModelError=vlm.ModelError)
    raise known.get(kind, RuntimeError)(f"rank {r}: {text if kind in known else kind + ': ' + text}")


def publish_error(message: str) -> str:
    """Leave this rank's error in the process group's key-value store (torchrun's rendezvous
    store), for the ranks its failure stops (their collectives fail, or torchrun sends them
    SIGTERM) to end with it (`peer_error`). Returns `message`."""
    try:
        dist.distributed_c10d._get_default_store().set(f"ttrv-error-{rank()}",
                                                       f"rank {rank()}: {message}")
    except Exception:  # noqa: BLE001  (no store, or gone: this rank still ends with its error)
        pass
    return message


def peer_error() -> str | None:
    """The error another rank published ("rank r: ..."), lowest rank first, or None."""
    try:
        store = dist.distributed_c10d._get_default_store()
        keys = [f"ttrv-error-{r}" for r in range(world()) if r != rank()]
        return next((store.get(k).decode() for k in keys if store.check([k])), None)
    except Exception:  # noqa: BLE001  (no process group or store: nothing to say)
        return None
