"""`python bench.py --logprob-memory`: the peak memory of per-token log-probs, full vs chunked.

For each response length T, the CPU peak RSS of the log-probs' forward + backward through a
Qwen2.5-VL-3B-sized vocabulary head: `full_logprobs` materialises the [R, T, V] logits at once,
grpo.token_logprobs works in chunks of grpo.LOGPROB_CHUNK tokens. Linux only (/proc/self).
"""
import time

import torch

import grpo
from harness.bench_models import QWEN3B_TEXT


def full_logprobs(head, hidden, targets, temperature=1.0):
    """The unchunked computation, the reference grpo.token_logprobs is compared with: [R, T, V]
    logits at once."""
    logp = torch.log_softmax(head(hidden).float() / temperature, dim=-1)          # [R, T, V]
    return logp.gather(-1, targets[..., None]).squeeze(-1)                        # [R, T]


def _proc_bytes(key):
    """A /proc/self/status entry (VmRSS, VmHWM) in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_rss_of(fn):
    """(bytes, seconds): the process's peak RSS while fn() runs, above its RSS before (CPU).

    Linux resets the peak (VmHWM) when 5 is written to /proc/self/clear_refs; glibc returns
    large tensors to the system on free, so RSS follows torch's CPU allocations.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, t0 = _proc_bytes("VmRSS"), time.perf_counter()
    fn()
    return _proc_bytes("VmHWM") - before, time.perf_counter() - t0


def logprob_memory(args):
    """Peak memory of log-probs + backward, full [R, T, V] vs grpo.token_logprobs, per length."""
    vocab, hidden_size, rows = QWEN3B_TEXT["vocab_size"], 64, args.logprob_rows
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    ways = dict(full=lambda h, t: full_logprobs(head, h, t),
                chunked=lambda h, t: grpo.token_logprobs(head, h, t))
    lines = [f"log-prob memory on the CPU: {rows} response(s) x T tokens, vocabulary {vocab:,}, "
             f"hidden {hidden_size}, fp32, forward + backward; chunk {grpo.LOGPROB_CHUNK} tokens",
             f"{'T':>6}  {'[R, T, V] fp32 (GB)':>20}  {'full peak (GB)':>15}  "
             f"{'chunked peak (GB)':>18}  {'full s':>7}  {'chunked s':>9}"]
    for L in args.logprob_lens:
        hidden = torch.randn(rows, L, hidden_size, requires_grad=True)            # [R, T, H]
        targets = torch.randint(0, vocab, (rows, L))                              # [R, T]
        got = {}
        for name, way in ways.items():
            head.weight.grad = hidden.grad = None
            way(hidden[:, :1], targets[:, :1]).sum().backward()                   # warm-up
            head.weight.grad = hidden.grad = None
            got[name] = peak_rss_of(lambda: way(hidden, targets).sum().backward())
        lines.append(f"{L:>6}  {rows * L * vocab * 4 / 1e9:>20.2f}  {got['full'][0] / 1e9:>15.2f}  "
                     f"{got['chunked'][0] / 1e9:>18.2f}  {got['full'][1]:>7.2f}  "
                     f"{got['chunked'][1]:>9.2f}")
    lines.append("peak = highest RSS during the call minus RSS before it (/proc/self VmHWM after "
                 "a reset), so it includes the head's weight gradient (hidden x V x 4 B).")
    return lines
