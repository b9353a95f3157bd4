"""The run directory: where one run's files go, and how the run says it ended.

    out = run_dir(cfg)                 # runs/<time>-<model>-<data>/, or --output-dir
    mark(out, "running")               # status.json: running / complete / failed / interrupted
    print(ending(out, "interrupted"))  # "marked interrupted in ...; saved: config.json, ..."

A run never merges into an old one: an existing run directory is refused, or with --overwrite
moved aside to <dir>.replaced-<time> first (never deleted), and a path that cannot be written is
refused before anything is loaded. What it leaves out: the files themselves (harness/run.py writes
them) and locking against two runs started at once on the same --output-dir.
"""

import datetime
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
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"cannot write to {path} ({e.strerror}); pass an --output-dir you can "
                          "write to.") from e
    return path


STATUS = "status.json"  # running / complete / failed / interrupted, and what was saved


def mark(out: Path, status: str, error: str = None) -> str:
    """Write the run's status into out/status.json; return the saved files as one phrase."""
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                   if p.is_file() and p.name != STATUS and "model" not in p.relative_to(out).parts)
    if (out / "model").is_dir() or any((d / "model").is_dir() for d in out.glob("seed-*")):
        files.append("model/")
    (out / STATUS).write_text(json.dumps(dict(status=status, error=error, saved=files), indent=2))
    saved = [f"{f} ({len((out / f).read_text().splitlines())} steps)"
             if f.endswith("metrics.jsonl") else f for f in files]
    return ", ".join(saved) or "nothing"


def ending(out: Path, status: str, error: str = None) -> str:
    """Mark the run `status` and say what it kept; a directory that kept nothing is removed."""
    saved = mark(out, status, error)
    if saved == "nothing":
        shutil.rmtree(out)
        return f"nothing was saved, so {out} was removed."
    return f"marked {status} in {out / STATUS}; saved: {saved}."
