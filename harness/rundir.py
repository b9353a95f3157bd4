"""The run directory: where one run's files go, and how the run says it ended.

    out = run_dir(cfg)                 # runs/<time>-<model>-<data>/, or --output-dir
    mark(out, "complete")              # status.json: running / complete / failed / interrupted
    print(ending(out, "interrupted"))  # "marked interrupted in ...; saved: config.json, ..."
    write_problem(error, out)          # "no space left on the disk holding ..." or None

A run never merges into an old one: an existing run directory is refused, or with --overwrite
moved aside to <dir>.replaced-<time> first (never deleted), and a path that cannot be written
(status.json "running" is the first file) is refused before anything is loaded. A run directory
removed while the run goes on, or a disk that fills, ends the run in one sentence. What it
leaves out: the files themselves (harness/run.py writes them) and locking against two runs
started at once on the same --output-dir.
"""

import datetime
import errno
import json
import shutil
from pathlib import Path


class RunDirError(Exception):
    """The run directory cannot be used; the message says what to pass instead."""


def run_dir(cfg, log=print) -> Path:
    """The run directory, created empty: fresh by default; an existing non-empty one only with
    --overwrite, which first moves the old run aside to <dir>.replaced-<time> (never deleted)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if cfg.output_dir is None:
        name = f"{stamp}-{Path(cfg.model).name}-{cfg.dataset.split(':')[0]}"
        path = Path("runs") / name
        for k in range(1, 100):
            if not path.exists():
                break
            path = Path("runs") / f"{name}-{k}"
    else:
        path = Path(cfg.output_dir)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--output-dir {path} is a file; pass a directory path.")
    if path.is_dir() and any(path.iterdir()):
        if not cfg.overwrite:
            raise RunDirError(f"{path} already holds a run; pass another --output-dir, or "
                              "--overwrite to replace it (the old run is moved aside).")
        if not any((path / f).exists() for f in ("config.json", STATUS)):
            raise RunDirError(f"{path} is not a ttrv run directory (no config.json), so "
                              "--overwrite will not move it; pass a new or empty --output-dir.")
        aside = path.with_name(f"{path.name}.replaced-{stamp}")
        try:
            path.rename(aside)
        except OSError as e:
            raise RunDirError(f"cannot move the old run {path} aside ({e.strerror}); pass a "
                              "new --output-dir.") from e
        log(f"moved the earlier run in {path} aside to {aside}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        mark(path, "running")                       # the first file: can the run write here?
    except OSError as e:
        raise RunDirError(f"cannot write to {path} ({e.strerror}); pass an --output-dir you can "
                          "write to.") from e
    return path


STATUS = "status.json"  # running / complete / failed / interrupted, and what was saved


def saved(out: Path) -> list[str]:
    """The files the run in `out` kept, status.json aside; a model directory as "model/"."""
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                   if p.is_file() and p.name != STATUS and "model" not in p.relative_to(out).parts)
    if (out / "model").is_dir() or any((d / "model").is_dir() for d in out.glob("seed-*")):
        files.append("model/")
    return files


def mark(out: Path, status: str, error: str = None) -> str:
    """Write the run's status into out/status.json; return the saved files as one phrase."""
    files = saved(out)
    (out / STATUS).write_text(json.dumps(dict(status=status, error=error, saved=files), indent=2))
    shown = [f"{f} ({len((out / f).read_text().splitlines())} steps)"
             if f.endswith("metrics.jsonl") else f for f in files]
    return ", ".join(shown) or "nothing"


def ending(out: Path, status: str, error: str = None) -> str:
    """Mark the run `status` and say what it kept; a directory that kept nothing is removed."""
    if not out.is_dir():
        return f"nothing could be marked: {out} was removed during the run."
    try:
        kept = mark(out, status, error)
    except OSError as e:                           # e.g. the disk is full
        return f"{out / STATUS} could not be written ({e.strerror}), so it may still say running."
    if kept == "nothing":
        shutil.rmtree(out)
        return f"nothing was saved, so {out} was removed."
    return f"marked {status} in {out / STATUS}; saved: {kept}."


def write_problem(e: BaseException, out: Path) -> str | None:
    """One sentence when exception `e` came from the run directory, not from the run: `out` was
    removed while the run went on, or the disk holding it is full (ENOSPC, which safetensors
    reports only in its message); else None."""
    if not out.is_dir():
        return (f"the run directory {out} was removed during the run, so its files are lost; run "
                "again with an --output-dir that nothing else removes.")
    if getattr(e, "errno", None) == errno.ENOSPC or f"os error {errno.ENOSPC})" in str(e):
        where = getattr(e, "filename", None) or out
        return (f"no space left on the disk holding {where}, so the file being written is "
                "incomplete; free some space there, or pass an --output-dir on another disk, "
                "and run again.")
    return None
