"""The tiny models built with the same bytes on every x86 CPU, and their cache.

    @pinned                               # the function runs in a child with pinned numerics
    def build_tiny_model(out_dir, ...): ...
    cached(path, build, "tiny model")     # built on first use, rebuilt when unreadable

Float sums run in another order under another instruction set, so a model taught on one CPU
type would differ from one taught on another, and so would what it learned. The tiny builds
(random weights, teaching) therefore run in a fresh Python process whose numerics are pinned
(PINNED): ATen's portable kernels (ATEN_CPU_CAPABILITY=default: element-wise ops, reductions and
normal_'s random init, which has its own vectorised path), MKL's compatible branch (MKL_CBWR:
matrix products and vector math give the same bits on Intel and other x86 CPUs), oneDNN off
(it picks its convolution kernels by CPU; torch's own convolutions then call MKL), glibc's math
without FMA (Python's math.sin / math.cos in the drawing of the shapes, the lr schedule), one
thread. docs/tiny-run.md lists the resulting sha256 of each tiny model.
"""

import errno
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import vlm

ROOT = Path(__file__).resolve().parents[1]
MARK = "TTRV_PINNED"                   # set in the child: a @pinned function then runs in place
PINNED = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE,STRICT",
          "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
          "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-FMA,-FMA4",
          "PYTHONHASHSEED": "0", MARK: "1"}
_CHILD = """import json, sys
root, module, name, args, kwargs = json.loads(sys.argv[1])
sys.path.insert(0, root)
import torch
torch.backends.mkldnn.enabled = False      # oneDNN's kernels depend on the CPU
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
from harness import tiny_build
tiny_build.child(module, name, args, kwargs)
"""
_RESULT = "\x00result "
# The errors about the place written to, which the user can fix (cache_error says how).
FULL = (errno.ENOSPC, errno.EDQUOT)
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
NOT_A_DIRECTORY = (errno.ENOTDIR, errno.EEXIST, errno.EISDIR)


class CacheError(vlm.ModelError):
    """The tiny models' cache cannot be written; the message names the path and what to do."""


def pinned(fn):
    """Run `fn(*args, **kwargs)` in a child Python process under PINNED (in place when already
    in one). Arguments: JSON values and paths; `log` (not passed on) gets each line the child
    prints. Returns fn's result, a path or None. An OSError in the child is raised here."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if os.environ.get(MARK) == "1":
            return fn(*args, **kwargs)
        log = kwargs.pop("log", print)
        return run_pinned(fn.__module__, fn.__name__, args, kwargs, log)
    return run


def run_pinned(module: str, name: str, args=(), kwargs=None, log=print):
    """`module.name(*args, **kwargs)` in a child Python process under PINNED (see pinned)."""
    plain = lambda v: str(v) if isinstance(v, Path) else v
    payload = json.dumps([str(ROOT), module, name, [plain(a) for a in args],
                          {k: plain(v) for k, v in (kwargs or {}).items()}])
    result = None
    with tempfile.TemporaryFile("w+") as err:   # a file, not a pipe: a full pipe would block
        child = subprocess.Popen([sys.executable, "-c", _CHILD, payload], cwd=ROOT, text=True,
                                 env=dict(os.environ, **PINNED), stdout=subprocess.PIPE,
                                 stderr=err)
        try:
            for line in child.stdout:
                if line.startswith(_RESULT):
                    result = json.loads(line[len(_RESULT):])
                else:
                    log(line.rstrip("\n"))
            code = child.wait()
        finally:
            if child.poll() is None:            # interrupted here: the child goes too
                child.kill()
                child.wait()
        err.seek(0)
        text = err.read()
    if code == 3:                               # an OSError in the child, as JSON (see child)
        raise OSError(*json.loads(text.strip().splitlines()[-1]))
    if code != 0:
        raise RuntimeError(f"the pinned build {module}.{name} failed (exit {code}):\n"
                           f"{text[-3000:]}")
    return Path(result) if result is not None else None


def child(module, name, args, kwargs):
    """The child's side of run_pinned: call, print the result. An error about the place written
    to (a full disk, no permission, a file in the way: cache_error's), also as safetensors
    reports it ("os error 28"), exits 3 with [errno, strerror, filename]; others are bugs."""
    try:
        result = getattr(importlib.import_module(module), name)(*args, **kwargs)
    except Exception as e:  # noqa: BLE001  (only I/O errors are turned into an exit code)
        found = re.search(r"os error (\d+)", str(e))
        number = e.errno if isinstance(e, OSError) else found and int(found.group(1))
        if number not in FULL + UNWRITABLE + NOT_A_DIRECTORY:
            raise
        print(f"\n{json.dumps([number, os.strerror(number), getattr(e, 'filename', None)])}",
              file=sys.stderr)
        sys.exit(3)
    print(f"{_RESULT}{json.dumps(None if result is None else str(result))}", flush=True)


# ------------------------------------------------------------------------------------ cache
def default_cache_dir() -> Path:
    """Where the tiny models are cached: $TTRV_CACHE (unless empty), else ~/.cache/ttrv."""
    return Path(os.environ.get("TTRV_CACHE") or Path.home() / ".cache" / "ttrv")


def cached(path: Path, build, what: str, log=print) -> Path:
    """`path`, built by `build(tmp)` on first use (build_cached), rebuilt when unreadable: a
    cache entry cut short (an interrupted copy, a full disk) is said, discarded and rebuilt."""
    if (path / "config.json").exists():
        problem = unreadable(path)
        if problem is None:
            return path
        log(f"the cached {what} in {path} cannot be read ({problem}); rebuilding it")
        discard(path)
    log(f"building the {what} in {path} (first run only, a minute or two)")
    start = time.time()
    build_cached(path, build)
    log(f"built the {what} in {time.time() - start:.0f} s")
    return path


def unreadable(path: Path) -> str | None:
    """What makes the saved model in `path` unreadable (a JSON file that is not JSON, weights
    whose safetensors header or length is wrong, e.g. a truncated copy), or None. Reads the
    JSON files and each weight file's header, not the tensors."""
    from safetensors import safe_open
    try:
        for config in sorted(path.glob("*.json")):
            json.loads(config.read_text())
        for weights in sorted(path.glob("*.safetensors")) or [path / "model.safetensors"]:
            with safe_open(str(weights), "pt"):
                pass
    except Exception as e:  # noqa: BLE001  (SafetensorError, OSError, JSONDecodeError: all say it)
        return f"{type(e).__name__}: {e}"
    return None


def discard(path: Path) -> None:
    """Remove a cache entry: renamed aside first (atomic), so no reader sees it half deleted."""
    aside = path.with_name(f"{path.name}.discarded-{os.getpid()}")
    try:
        path.rename(aside)
    except FileNotFoundError:       # another process discarded it first
        return
    shutil.rmtree(aside, ignore_errors=True)


def build_cached(path: Path, build) -> Path:
    """`build(tmp)` in a temporary sibling directory, renamed to `path` when complete, so an
    interrupted build never leaves a half-written cache; nothing is built when `path` exists.
    A cache directory that cannot be written (read-only, a file, a full disk) raises
    CacheError, one sentence naming it."""
    if (path / "config.json").exists():
        return path
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
        build(tmp)
        tmp.rename(path)
    except OSError as e:
        if not (path / "config.json").exists():     # unless a concurrent build finished first
            raise cache_error(path.parent, e) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def cache_error(cache: Path, e: OSError) -> Exception:
    """The CacheError for OSError `e` while writing into `cache`, or `e` itself when it is not
    about the place (then it is a bug, with its traceback)."""
    where = "the tiny models' cache directory"
    fix = "or set TTRV_CACHE to a writable directory"
    if e.errno in FULL:
        return CacheError(f"the disk holding {where} {cache} is full ({e.strerror}); free some "
                          f"space there {fix} on another disk.")
    if e.errno in UNWRITABLE:
        return CacheError(f"{where} {cache} cannot be written ({e.strerror}); make it writable "
                          f"{fix}.")
    if e.errno in NOT_A_DIRECTORY:
        file = next((p for p in (cache, *cache.parents) if p.exists() and not p.is_dir()), cache)
        return CacheError(f"{where} {cache} cannot be made: {file} is a file; move that file "
                          f"{fix}.")
    return e
