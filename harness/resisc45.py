"""RESISC45 (NWPU-RESISC45), the paper's main dataset: its files, the pinned zip and its md5.

    load_resisc45("test")                          # hub zip at the pinned revision, md5-checked
    load_resisc45("test", "NWPU-RESISC45.zip")     # or that zip, or its extracted folder

The paper's test set is images 601-700 of each of the 45 classes (4,500); "train" is images
1-600. Questions are 4-way, asked as data.make_choice_question does. Imports data.py only;
presets.py's `load_dataset("resisc45")` dispatches here.
"""

from __future__ import annotations

import hashlib
import os

from data import RECOGNITION_PROMPT, DataError, Example, _open_zip, _questions, display_name

RESISC45_CLASSES = [
    "airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral",
    "church", "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert",
    "forest", "freeway", "golf_course", "ground_track_field", "harbor", "industrial_area",
    "intersection", "island", "lake", "meadow", "medium_residential", "mobile_home_park",
    "mountain", "overpass", "palace", "parking_lot", "railway", "railway_station",
    "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship", "snowberg",
    "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace",
    "thermal_power_station", "wetland"]
RESISC45_SPLITS = {"test": range(601, 701), "train": range(1, 601)}  # TTRV tests on 601-700
RESISC45_REPO, RESISC45_FILE = "torchgeo/resisc45", "NWPU-RESISC45.zip"
RESISC45_REVISION = "a826b44d938a883185f11ebe3d512d38b464312f"
RESISC45_MD5 = "75206b2e16446591afa88e2628744886"


def resisc45_files(split: str = "test", indices=None) -> list[tuple[str, str]]:
    """(class, path inside NWPU-RESISC45/) of a split, classes alphabetical, numbers ascending.

    >>> files = resisc45_files("test")
    >>> len(files), files[0], files[-1][1]
    (4500, ('airplane', 'airplane/airplane_601.jpg'), 'wetland/wetland_700.jpg')
    """
    if indices is None:
        if split not in RESISC45_SPLITS:
            raise DataError(f"resisc45 has splits {sorted(RESISC45_SPLITS)}, not {split!r}.")
        indices = RESISC45_SPLITS[split]
    return [(c, f"{c}/{c}_{i:03d}.jpg") for c in RESISC45_CLASSES for i in indices]


def file_md5(path: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_md5(path: str, expected: str) -> None:
    """DataError unless `path` hashes to `expected`; a `<path>.md5-ok` marker skips re-hashing."""
    st = os.stat(path)
    stamp, marker = f"{expected} {st.st_size} {st.st_mtime_ns}", path + ".md5-ok"
    if os.path.exists(marker) and open(marker).read().strip() == stamp:
        return
    got = file_md5(path)
    if got != expected:
        raise DataError(f"{path} is corrupt or incomplete (md5 {got}, expected {expected}); "
                        "delete it and run again to download it afresh.")
    try:
        with open(marker, "w") as f:
            f.write(stamp + "\n")
    except OSError:
        pass  # read-only cache: hash again next time


def _download_resisc45() -> str:
    try:
        from huggingface_hub import hf_hub_download
        path = hf_hub_download(repo_id=RESISC45_REPO, repo_type="dataset",
                               filename=RESISC45_FILE, revision=RESISC45_REVISION)
    except Exception as err:  # offline, hub down, ...: all mean "get the file another way"
        raise DataError(f"Could not download {RESISC45_FILE} from the hub dataset {RESISC45_REPO} "
                        f"({type(err).__name__}); download it elsewhere and pass its path as "
                        "--data-dir PATH (data_dir=PATH).") from err
    verify_md5(path, RESISC45_MD5)
    return path


def load_resisc45(split: str = "test", data_dir: str | None = None, seed: int = 0,
                  prompt: str = RECOGNITION_PROMPT, *, indices=None,
                  spell=display_name) -> list[Example]:
    """RESISC45 from `data_dir` (NWPU-RESISC45.zip, the extracted NWPU-RESISC45 folder, or a
    folder holding either) or, without it, from the hub. `indices` narrows the image numbers."""
    files = resisc45_files(split, indices)
    path = data_dir or _download_resisc45()
    if not os.path.exists(path):
        raise DataError(f"{path} does not exist; pass NWPU-RESISC45.zip or its extracted folder.")
    root = next((d for d in (os.path.join(path, "NWPU-RESISC45"), path)
                 if os.path.isdir(os.path.join(d, RESISC45_CLASSES[0]))), None)
    if root is not None:  # extracted folder
        sources = [os.path.join(root, rel) for _, rel in files]
        missing = [s for s in sources if not os.path.isfile(s)]
    else:
        if os.path.isdir(path):
            path = os.path.join(path, RESISC45_FILE)
            if not os.path.isfile(path):
                raise DataError(f"{data_dir} holds no NWPU-RESISC45/ folder, class folders "
                                "(airplane/, ...) or NWPU-RESISC45.zip; point at one of those.")
        names = set(_open_zip(path).namelist())
        prefix = "NWPU-RESISC45/" if f"NWPU-RESISC45/{files[0][1]}" in names else ""
        sources = [(path, prefix + rel) for _, rel in files]
        missing = [m for _, m in sources if m not in names]
    if missing:
        raise DataError(f"{len(missing)} RESISC45 images are missing from {root or path} (first: "
                        f"{missing[0]}); it is not the complete dataset: download it again.")
    items = [(rel.split("/")[1][:-4], cls, src) for (cls, rel), src in zip(files, sources)]
    return _questions(items, RESISC45_CLASSES, seed, prompt, spell)
