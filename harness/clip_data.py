"""Class-label datasets for CLIP test-time adaptation: images, their class index, the class names.

A CLIP classifies among all of a dataset's classes at once (no 4-way questions), so these loaders
return a `ClassSet`: the class names to put in the prompt ("a photo of a {name}.") and, per
image, a `data.Example` (which reads the image) with its class index.

    ds = load("imagenet-a", data_dir="imagenet-a/", classnames="LOC_synset_mapping.txt")
    ds = load("folder:my_images/")             # one sub-folder of images per class
    ds = load("toy-shifted", limit=240)        # the offline demonstration (tiny_clip.py)

Class names: built in, or from the user.
  built in   ImageNet's 1,000 class names in index order, as torchvision ships them
             (`ResNet18_Weights.IMAGENET1K_V1.meta["categories"]`, no download): imagenet,
             imagenet-v2 and imagenet-sketch use them. They are not OpenAI's curated CLIP names
             (the published zero-shot numbers use those; they hold two "crane" and two "maillot").
  the data   imagenet-a and imagenet-r from the hub (presets.PRESETS, columns NOT confirmed there)
             carry a class_name column: the 200 classes are the names seen, sorted.
  the user   --classnames FILE: one class per line, either "NAME" (line i names class index i)
             or "KEY NAME" with KEY a class folder (a WordNet id, e.g. ImageNet's
             LOC_synset_mapping.txt "n01440764 tench, Tinca tinca"); only the text before the
             first comma is used. Needed for imagenet-a / imagenet-r as extracted folders (200
             WordNet-id folders): this file holds no list of their 200 ids, the folders are it.
Layouts of --data-dir: imagenet and imagenet-sketch: 1,000 class folders (WordNet ids, which
sort into ImageNet's index order) or the hub's parquet files; imagenet-v2: the folders 0..999
(sorted as text they would be 0, 1, 10, 100, ...: they are read as numbers); imagenet-a/-r: 200
class folders or the hub's parquet files. resisc45, dtd, food101 and shapes come through
presets.load_dataset with their own class lists.
"""

from __future__ import annotations

import dataclasses
import os
import re

import data
from data import DataError
from harness import local_data, resisc45, shapes

WNID = re.compile(r"n\d{8}$")
IMAGENET_FAMILY = ("imagenet", "imagenet-a", "imagenet-r", "imagenet-v2", "imagenet-sketch")
TOY = ("toy-shifted", "toy-taught")          # tiny_clip.py's demonstration, drawn offline
OTHERS = ("resisc45", "dtd", "food101", "shapes")
TOY_SIZE = 240                               # default test images of a toy set (--limit)


@dataclasses.dataclass
class ClassSet:
    """A labelled test set: examples[i] shows class labels[i], whose name is classnames[labels[i]]."""
    name: str
    classnames: list[str]
    examples: list[data.Example]
    labels: list[int]


def names_text() -> str:
    """The known dataset names, for error messages."""
    return ", ".join(TOY + IMAGENET_FAMILY + OTHERS + ("folder:PATH",))


def check_name(name: str) -> str | None:
    """One sentence if `name` is no dataset this module loads, else None (no I/O)."""
    kind, _, path = name.partition(":")
    if kind == "folder" and path:
        return None
    if name in TOY + IMAGENET_FAMILY + OTHERS:
        return None
    return f"Unknown dataset {name!r}; known datasets: {names_text()}."


def imagenet_classnames() -> list[str]:
    """ImageNet's 1,000 class names in index order, from torchvision's weight metadata."""
    from torchvision.models import ResNet18_Weights
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def read_classnames(path: str) -> tuple[list[str], dict[str, str]]:
    """A names file -> (names in line order, {KEY: name} when every line is "KEY NAME")."""
    if not os.path.isfile(path):
        raise DataError(f"--classnames {path} is not a file; pass a text file with one class "
                        "name a line.")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    first = lambda text: text.split(",")[0].strip()
    names = [first(line) for line in lines]
    keyed = [line.split(None, 1) for line in lines]
    mapping = ({k: first(v) for k, v in keyed}
               if all(len(kv) == 2 and WNID.match(kv[0]) for kv in keyed) else {})
    return names, mapping


def _images(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(local_data.IMAGE_EXTENSIONS))


def _class_folders(root: str) -> list[str]:
    return sorted(d for d in os.listdir(root)
                  if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))


def from_folders(name: str, root: str, folders: list[str], labels_of, classnames: list[str],
                 limit: int | None = None) -> ClassSet:
    """Images of each class folder (folders in the given order, images by name)."""
    examples, labels = [], []
    for folder in folders:
        files = _images(os.path.join(root, folder))
        if not files:
            raise DataError(f"Class folder {os.path.join(root, folder)} holds no images "
                            f"({' '.join(local_data.IMAGE_EXTENSIONS)}); add some or remove it.")
        for f in files:
            examples.append(data.Example(f"{folder}/{f}", "", [], None, folder,
                                         os.path.join(root, folder, f)))
            labels.append(labels_of(folder))
    return _limited(ClassSet(name, classnames, examples, labels), limit)


def _limited(ds: ClassSet, limit: int | None) -> ClassSet:
    """The first `limit` images, drawn evenly over the set (every k-th) so classes stay mixed."""
    if not limit or limit >= len(ds.examples):
        return ds
    step = len(ds.examples) / limit
    keep = [int(i * step) for i in range(limit)]
    return ClassSet(ds.name, ds.classnames, [ds.examples[i] for i in keep],
                    [ds.labels[i] for i in keep])


def load_folder(name: str, root: str, classnames_file: str | None = None,
                limit: int | None = None) -> ClassSet:
    """`root/<class>/<image>`: classes sorted by folder name; the name of a class is its folder
    (underscores as spaces) unless --classnames names it."""
    if not os.path.isdir(root):
        raise DataError(f"{name}: {root!r} is not a directory; pass a folder with one sub-folder "
                        "of images per class.")
    folders = _class_folders(root)
    names = [data.display_name(f) for f in folders]
    if classnames_file:
        listed, mapping = read_classnames(classnames_file)
        if mapping:
            missing = [f for f in folders if f not in mapping]
            if missing:
                raise DataError(f"--classnames {classnames_file} names no class for folder "
                                f"{missing[0]} (and {len(missing) - 1} more); add a line for it.")
            names = [mapping[f] for f in folders]
        elif len(listed) == len(folders):
            names = listed
        else:
            raise DataError(f"--classnames {classnames_file} has {len(listed)} names for "
                            f"{len(folders)} class folders; give one line per folder.")
    index = {f: i for i, f in enumerate(folders)}
    return from_folders(name, root, folders, index.__getitem__, names, limit)


def load_imagenet(name: str, data_dir: str | None, classnames_file: str | None = None,
                  limit: int | None = None) -> ClassSet:
    """One of IMAGENET_FAMILY from a local copy (see the module docstring) or the hub."""
    builtin = imagenet_classnames()
    names, mapping = read_classnames(classnames_file) if classnames_file else (None, {})
    if names and not mapping and len(names) != 1000:
        raise DataError(f"--classnames {classnames_file} has {len(names)} lines; an ImageNet "
                        "names file needs 1,000 (index order) or 'WNID NAME' lines.")
    names = [mapping.get(k, k) for k in sorted(mapping)] if mapping else (names or builtin)
    if name == "imagenet-v2":
        if not data_dir or not os.path.isdir(data_dir):
            raise DataError("imagenet-v2 needs --data-dir DIR: the extracted "
                            "imagenetv2-matched-frequency-format-val folder (class folders 0..999).")
        folders = sorted((d for d in _class_folders(data_dir) if d.isdigit()), key=int)
        if len(folders) != 1000:
            raise DataError(f"{data_dir} holds {len(folders)} numbered class folders, not 1,000; "
                            "pass the extracted ImageNet-V2 folder.")
        return from_folders(name, data_dir, folders, int, names, limit)
    if data_dir and os.path.isdir(data_dir) and any(WNID.match(d) for d in _class_folders(data_dir)):
        folders = [d for d in _class_folders(data_dir) if WNID.match(d)]
        if len(folders) == 1000:     # sorted WordNet ids = ImageNet's index order
            return from_folders(name, data_dir, folders, folders.index, names, limit)
        if not mapping:
            raise DataError(f"{data_dir} holds {len(folders)} WordNet-id class folders, and the "
                            "built-in names have no WordNet ids; pass --classnames FILE with "
                            "'WNID NAME' lines (e.g. ImageNet's LOC_synset_mapping.txt).")
        missing = [d for d in folders if d not in mapping]
        if missing:
            raise DataError(f"--classnames {classnames_file} has no line for {missing[0]}; pass "
                            "a file with a 'WNID NAME' line for every class folder.")
        return from_folders(name, data_dir, folders, folders.index,
                            [mapping[d] for d in folders], limit)
    return load_imagenet_rows(name, data_dir, names, limit)


def load_imagenet_rows(name: str, data_dir: str | None, names: list[str],
                       limit: int | None = None) -> ClassSet:
    """The hub copy named in presets.PRESETS (downloaded, or its files in data_dir): integer
    labels index `names`; a class_name column gives its own sorted class list."""
    from harness import hub
    from harness import presets
    p = presets.PRESETS[name]
    split = p.splits["test"]
    path = data_dir or hub._download(p.repo, p.revision, [f"*{split}-*.parquet",
                                                          f"*{split}/*.parquet"])
    label = p.columns["label"]
    rows, _ = hub.read_rows(path, split, ["image", label], "image")
    values = [r[label] for r in rows]
    if all(isinstance(v, int) for v in values):
        classes, labels = names, values
    else:
        classes = sorted({data.display_name(str(v)) for v in values})
        labels = [classes.index(data.display_name(str(v))) for v in values]
    examples = [hub.make_example(f"{name}-{i:05d}", "", [], None, classes[c], r["image"])
                for i, (r, c) in enumerate(zip(rows, labels))]
    if not examples:
        raise DataError(f"{path} holds no {name} images in split {split}.")
    return _limited(ClassSet(name, classes, examples, labels), limit)


def load_toy(name: str, limit: int | None = None, seed: int = 0) -> ClassSet:
    """The tiny CLIP's test images: "toy-shifted" (the shift) or "toy-taught" (as taught)."""
    from harness import tiny_clip
    examples = tiny_clip.toy_examples(name.removeprefix("toy-"), limit or TOY_SIZE, seed)
    return ClassSet(name, list(tiny_clip.CLASSES), examples,
                    [tiny_clip.CLASSES.index(e.label) for e in examples])


def load_other(name: str, data_dir: str | None, limit: int | None = None) -> ClassSet:
    """resisc45, dtd, food101, shapes through presets.load_dataset, with their class lists."""
    from harness import presets
    examples = presets.load_dataset(name, "test", data_dir=data_dir)
    known = {"resisc45": [data.display_name(c) for c in resisc45.RESISC45_CLASSES],
             "dtd": list(presets.DTD_CLASSES), "shapes": list(shapes.SHAPES)}
    classes = known.get(name) or sorted({e.label for e in examples})   # food101: those seen
    return _limited(ClassSet(name, classes, examples, [classes.index(e.label) for e in examples]),
                    limit)


def load(name: str, data_dir: str | None = None, classnames: str | None = None,
         limit: int | None = None, seed: int = 0) -> ClassSet:
    """Any dataset name of this module; `limit` keeps that many images spread over the set."""
    problem = check_name(name)
    if problem:
        raise DataError(problem)
    kind, _, path = name.partition(":")
    if kind == "folder":
        return load_folder(name, path, classnames, limit)
    if name in TOY:
        return load_toy(name, limit, seed)
    if name in IMAGENET_FAMILY:
        return load_imagenet(name, data_dir, classnames, limit)
    return load_other(name, data_dir, limit)
