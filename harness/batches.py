"""Prompt tensors prepared ahead: torch DataLoader workers decode the next batches' images and run
the processor while the model works on this one (eval.evaluate's `prepare`).

    prepare = functools.partial(prompt_batches, num_workers=4)
    evaluation.evaluate(model, processor, examples, prepare=prepare)
"""
import os

import torch

import data
import vlm


class _Prompts:
    """A DataLoader collate: a list of examples -> their PromptInputs. A DataError (a corrupt
    image) or ModelError comes back as the value, so it surfaces in the main process as its own
    one sentence, not wrapped in a worker's traceback."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples):
        try:
            return vlm.example_inputs(self.processor, examples)
        except (data.DataError, vlm.ModelError) as e:   # returned: the user can fix it
            return e


def prompt_batches(processor, batches, num_workers: int = 0):
    """The PromptInputs of each list of examples in `batches`, in order, prepared ahead.

    With num_workers > 0, `num_workers` torch DataLoader worker processes decode the images and
    run the processor (vlm.example_inputs is the collate) for the next batches while the caller's
    model works on this one; 0 prepares each batch in this process when it is asked for. Either
    way the tensors are the same. Raises a batch's DataError when that batch is reached.
    """
    collate = _Prompts(processor)
    if not num_workers:
        items = map(collate, batches)
    else:
        from torch.utils.data import DataLoader
        # the workers are forked: a tokenizer that used its threads would warn in each of them
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # its own generator: the workers' seeds are not drawn from torch's global one (sampling)
        items = iter(DataLoader(batches, batch_size=None, collate_fn=collate,
                                num_workers=num_workers, generator=torch.Generator()))
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


def default_workers(device: str) -> int:
    """--num-workers when unset: min(4, this process's CPUs) on CUDA, where image preparation
    overlaps the GPU; 0 on the CPU, where the model and the workers would share the same cores."""
    if not device.startswith("cuda"):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cpus or 1)
