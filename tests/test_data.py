"""data.py as a spec: the paper's prompt and question format, the datasets, the adaptation draw.

Everything runs offline on tiny files built in tmp_path; the hub is monkeypatched.
"""

import collections
import hashlib
import io
import json
import os
import pickle
import random
import zipfile

import pytest
from PIL import Image

import data
from harness import presets, resisc45, shapes
from conftest import shared_path
from data import (DTD_PROMPT, LETTERS, RECOGNITION_PROMPT, DataError, Example, draw_adaptation_set,
                  make_choice_question, strip_labels)
from harness.presets import DATASETS, load_dataset
from harness.resisc45 import RESISC45_CLASSES

# Appendix C as quoted in the paper notes (section 3), "\n" written as in the paper.
APPENDIX_C = (r"<image> \n Look at the given image and identify what it shows. Choose the correct "
              r"answer from the options below and respond with only the corresponding option "
              r"letter (A, B, C, or D). Do not include any explanation or extra text. \n Options:"
              r"\nA. {o1}\nB. {o2}\nC. {o3}\nD. {o4}")


def _unescape(text):
    return text.replace(r"\n", "\n")


# ---------------------------------------------------------------- prompt and question format

def test_recognition_prompt_is_appendix_c_verbatim_without_the_image_tag():
    assert "<image> \n " + RECOGNITION_PROMPT == _unescape(APPENDIX_C)
    assert RECOGNITION_PROMPT.startswith("Look at the given image and identify what it shows. ")
    assert RECOGNITION_PROMPT.endswith("extra text. \n Options:\nA. {o1}\nB. {o2}\nC. {o3}\nD. {o4}")


def test_recognition_prompt_matches_the_notes_file():
    notes = shared_path("paper-notes.md").read_text(encoding="utf-8")
    line = next(l.strip() for l in notes.splitlines() if l.strip().startswith("<image>"))
    assert "<image> \n " + RECOGNITION_PROMPT == _unescape(line)


def test_dtd_prompt_asks_for_the_texture_and_is_otherwise_identical():
    assert DTD_PROMPT.startswith("Look at the given image and identify what texture it shows. ")
    assert DTD_PROMPT.replace("what texture it shows", "what it shows") == RECOGNITION_PROMPT
    assert presets.PROMPTS["dtd"] == DTD_PROMPT


def test_question_text_is_the_prompt_filled_with_the_options():
    q, opts, ans = make_choice_question("golf_course", RESISC45_CLASSES, random.Random(0))
    assert q == RECOGNITION_PROMPT.format(o1=opts[0], o2=opts[1], o3=opts[2], o4=opts[3])
    assert opts[LETTERS.index(ans)] == "golf course"  # underscores read as spaces


def test_choice_question_invariants_over_many_questions():
    rng = random.Random(1)
    for i in range(2000):
        label = RESISC45_CLASSES[i % 45]
        q, opts, ans = make_choice_question(label, RESISC45_CLASSES, rng)
        assert len(opts) == 4 and len(set(opts)) == 4
        assert ans in "ABCD" and opts["ABCD".index(ans)] == data.display_name(label)
        assert all(o in map(data.display_name, RESISC45_CLASSES) for o in opts)
        assert q.endswith("\n".join(f"{l}. {o}" for l, o in zip("ABCD", opts)))


def test_answer_slot_and_distractors_are_uniform():
    rng, slots, distractors = random.Random(2), collections.Counter(), collections.Counter()
    classes = [f"class_{i}" for i in range(10)]
    for _ in range(8000):
        _, opts, ans = make_choice_question("class_0", classes, rng)
        slots[ans] += 1
        distractors.update(o for o in opts if o != "class 0")
    assert set(slots) == set("ABCD")
    assert all(abs(n / 8000 - 0.25) < 0.03 for n in slots.values())
    assert len(distractors) == 9  # every other class shows up, about equally often
    assert all(abs(n / (3 * 8000) - 1 / 9) < 0.02 for n in distractors.values())


def test_choice_question_is_fixed_by_the_seed():
    ask = lambda seed: [make_choice_question(c, RESISC45_CLASSES, rng)
                        for rng in [random.Random(seed)] for c in RESISC45_CLASSES]
    assert ask(0) == ask(0)
    assert ask(0) != ask(1)


def test_choice_question_errors():
    with pytest.raises(DataError, match="at least 4"):
        make_choice_question("a", ["a", "b", "c"], random.Random(0))
    with pytest.raises(DataError, match="at least 4"):
        make_choice_question("z", ["a", "b", "c", "d"], random.Random(0))  # label not a class
    with pytest.raises(DataError, match="template"):
        make_choice_question("a", list("abcde"), random.Random(0), prompt="{o1} {o2}")
    q, opts, _ = make_choice_question("a", list("abc"), random.Random(0), "{o1}|{o2}", 2)
    assert q == "|".join(opts)


# ---------------------------------------------------------------- Example and the shapes dataset

def test_strip_labels_removes_answer_and_label_only():
    ex = Example("x", "Q", ["cat", "dog"], "B", "dog", Image.new("RGB", (4, 4)))
    bare = strip_labels(ex)
    assert (bare.answer, bare.label) == (None, None)
    assert (bare.id, bare.question, bare.options) == ("x", "Q", ["cat", "dog"])
    assert ex.answer == "B"  # the original is untouched


def test_shapes_splits_sizes_classes_and_images():
    train, test = load_dataset("shapes", "train"), load_dataset("shapes", "test")
    assert (len(train), len(test)) == (400, 200)
    names = set(map(data.display_name, shapes.SHAPES))
    assert len(names) == 4
    for split in (train, test):
        assert set(e.label for e in split) == names  # every class appears, balanced
        assert max(collections.Counter(e.label for e in split).values()) <= len(split) // 4 + 1
        assert all(e.options == shapes.SHAPES for e in split)  # fixed option order (see SHAPES)
        assert all(e.options[LETTERS.index(e.answer)] == e.label for e in split)
        assert all(e.question.startswith("Look at the given image") for e in split)
    img = test[0].image()
    assert (img.mode, img.size) == ("RGB", (112, 112))
    assert len(set(img.getdata())) > 2  # a shape on a background, not a blank canvas


def test_shapes_are_deterministic_and_train_differs_from_test():
    a, b = load_dataset("shapes", "test"), load_dataset("shapes", "test")
    assert [(e.question, e.answer) for e in a] == [(e.question, e.answer) for e in b]
    assert all(x.image().tobytes() == y.image().tobytes() for x, y in zip(a[:20], b[:20]))
    train = load_dataset("shapes", "train")
    assert {e.image().tobytes() for e in train[:50]}.isdisjoint(e.image().tobytes() for e in a)
    other = load_dataset("shapes", "test", seed=1)
    assert [e.image().tobytes() for e in other[:5]] != [e.image().tobytes() for e in a[:5]]
    with pytest.raises(DataError, match="splits"):
        load_dataset("shapes", "val")


def test_examples_pickle():
    ex = load_dataset("shapes")[0]
    again = pickle.loads(pickle.dumps(ex))
    assert again.image().tobytes() == ex.image().tobytes() and again.answer == ex.answer


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(DataError) as err:
        load_dataset("imagenet-z")
    for name in ("resisc45", "shapes", "folder:PATH", "jsonl:PATH"):
        assert name in str(err.value)
    assert {"resisc45", "shapes", "folder", "jsonl"} <= set(DATASETS)


# ---------------------------------------------------------------- RESISC45

INDICES = [601, 602, 700]  # the fixture holds 600, 601, 602, 700 of every class


def _jpeg(colour):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _colour(i):
    return (5 * i, 100, 200)


@pytest.fixture(scope="module")
def resisc_zip(tmp_path_factory):
    """A miniature NWPU-RESISC45.zip: the real layout, 4 images per class, 8x8 solid colours."""
    path = tmp_path_factory.mktemp("hub") / "NWPU-RESISC45.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for c, cls in enumerate(RESISC45_CLASSES):
            for i in (600, 601, 602, 700):
                zf.writestr(f"NWPU-RESISC45/{cls}/{cls}_{i:03d}.jpg", _jpeg(_colour(c)))
    return path


@pytest.fixture(scope="module")
def resisc_dir(resisc_zip, tmp_path_factory):
    """The same, extracted: <parent>/NWPU-RESISC45/<class>/<class>_NNN.jpg."""
    parent = tmp_path_factory.mktemp("extracted")
    with zipfile.ZipFile(resisc_zip) as zf:
        zf.extractall(parent)
    return parent


def test_resisc45_test_split_is_images_601_to_700_of_every_class():
    files = resisc45.resisc45_files("test")
    assert len(files) == 4500 and RESISC45_CLASSES == sorted(RESISC45_CLASSES)
    assert len(RESISC45_CLASSES) == 45
    per_class = collections.defaultdict(list)
    for cls, rel in files:
        per_class[cls].append(rel)
    assert list(per_class) == RESISC45_CLASSES
    assert per_class["golf_course"][0] == "golf_course/golf_course_601.jpg"
    assert per_class["golf_course"][-1] == "golf_course/golf_course_700.jpg"
    assert all(len(v) == 100 for v in per_class.values())
    assert len(resisc45.resisc45_files("train")) == 45 * 600
    assert resisc45.resisc45_files("train")[0] == ("airplane", "airplane/airplane_001.jpg")
    with pytest.raises(DataError, match="splits"):
        resisc45.resisc45_files("val")


def _check_resisc(examples):
    assert len(examples) == 45 * len(INDICES)
    assert examples[0].id == "airplane_601" and examples[-1].id == "wetland_700"
    for ex in examples[::7]:
        cls = ex.id.rsplit("_", 1)[0]
        assert ex.label == data.display_name(cls) == ex.options[LETTERS.index(ex.answer)]
        r, g, b = ex.image().getpixel((4, 4))
        assert abs(r - _colour(RESISC45_CLASSES.index(cls))[0]) <= 6  # the right file was read


@pytest.mark.parametrize("where", ["zip", "dir_holding_zip", "extracted_parent",
                                   "extracted_root"])
def test_resisc45_reads_the_zip_or_the_extracted_folder(where, resisc_zip, resisc_dir):
    data_dir = {"zip": resisc_zip, "dir_holding_zip": resisc_zip.parent,
                "extracted_parent": resisc_dir,
                "extracted_root": resisc_dir / "NWPU-RESISC45"}[where]
    examples = resisc45.load_resisc45("test", str(data_dir), seed=0, indices=INDICES)
    _check_resisc(examples)
    reference = resisc45.load_resisc45("test", str(resisc_zip), seed=0, indices=INDICES)
    assert [e.question for e in examples] == [e.question for e in reference]  # seed fixes them


def test_resisc45_zip_examples_are_plain_data(resisc_zip):
    ex = resisc45.load_resisc45("test", str(resisc_zip), indices=[601])[0]
    assert ex.source == (str(resisc_zip), "NWPU-RESISC45/airplane/airplane_601.jpg")
    assert pickle.loads(pickle.dumps(ex)).image().size == (8, 8)


def test_resisc45_layout_errors(resisc_zip, resisc_dir, tmp_path):
    with pytest.raises(DataError, match="airplane_603.jpg"):
        resisc45.load_resisc45("test", str(resisc_zip), indices=[601, 603])
    with pytest.raises(DataError, match="airplane_603.jpg"):
        resisc45.load_resisc45("test", str(resisc_dir), indices=[603])
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("resisc45", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="NWPU-RESISC45.zip"):
        load_dataset("resisc45", data_dir=str(tmp_path))  # an empty folder
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="zip"):
        load_dataset("resisc45", data_dir=str(junk))


def test_md5_check_and_its_marker(tmp_path, monkeypatch):
    f = tmp_path / "file.zip"
    f.write_bytes(b"hello")
    good = hashlib.md5(b"hello").hexdigest()
    with pytest.raises(DataError, match="corrupt.*delete it"):
        resisc45.verify_md5(str(f), "0" * 32)
    resisc45.verify_md5(str(f), good)
    assert (tmp_path / "file.zip.md5-ok").exists()
    monkeypatch.setattr(resisc45, "file_md5", lambda p: pytest.fail("re-hashed a verified file"))
    resisc45.verify_md5(str(f), good)  # the marker spares the hashing
    monkeypatch.undo()
    f.write_bytes(b"hellO")  # replaced file: size/mtime differ from the marker, hashed again
    os.utime(f, ns=(1, 1))
    with pytest.raises(DataError, match="corrupt"):
        resisc45.verify_md5(str(f), good)


def test_resisc45_without_data_dir_downloads_the_pinned_zip(resisc_zip, monkeypatch):
    import huggingface_hub
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        return str(resisc_zip)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(resisc45, "RESISC45_MD5", resisc45.file_md5(str(resisc_zip)))
    _check_resisc(resisc45.load_resisc45("test", indices=INDICES))
    assert calls == [dict(repo_id="torchgeo/resisc45", repo_type="dataset",
                          filename="NWPU-RESISC45.zip",
                          revision="a826b44d938a883185f11ebe3d512d38b464312f")]
    monkeypatch.setattr(resisc45, "RESISC45_MD5", "0" * 32)
    os.remove(str(resisc_zip) + ".md5-ok")
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("resisc45")


def test_resisc45_offline_says_to_pass_data_dir(monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("resisc45")


def test_pinned_hub_file():
    assert (resisc45.RESISC45_REPO, resisc45.RESISC45_FILE) == ("torchgeo/resisc45", "NWPU-RESISC45.zip")
    assert resisc45.RESISC45_REVISION == "a826b44d938a883185f11ebe3d512d38b464312f"
    assert resisc45.RESISC45_MD5 == "75206b2e16446591afa88e2628744886"


# ---------------------------------------------------------------- folder: and jsonl:

def _image_folder(root, classes=("cat", "dog", "red_fox", "owl", "bee"), per_class=2):
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (6, 6), (40 * c, 0, 0)).save(root / cls / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_folder_dataset(tmp_path):
    root = _image_folder(tmp_path / "animals")
    examples = load_dataset(f"folder:{root}")
    assert len(examples) == 10 and examples[0].id == "bee/0.png"  # sorted; the .txt is skipped
    assert {e.label for e in examples} == {"bee", "cat", "dog", "owl", "red fox"}
    assert all(e.options[LETTERS.index(e.answer)] == e.label for e in examples)
    same = load_dataset("folder", data_dir=str(root))
    assert [e.question for e in same] == [e.question for e in examples]
    assert examples[0].image().size == (6, 6)
    dtd = load_dataset(f"folder:{root}", prompt=DTD_PROMPT)
    assert "what texture it shows" in dtd[0].question


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(DataError, match="at least 4"):
        load_dataset(f"folder:{_image_folder(tmp_path / 'few', ('a', 'b', 'cat'))}")
    root = _image_folder(tmp_path / "ok")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*no images"):
        load_dataset(f"folder:{root}")
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(f"folder:{tmp_path / 'missing'}")


def test_corrupt_images_fail_when_opened_and_name_the_file(tmp_path):
    root = _image_folder(tmp_path / "animals")
    (root / "dog" / "bad.jpg").write_bytes(b"garbage, not a jpeg")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(good, "JPEG")
    (root / "owl" / "cut.jpg").write_bytes(good.getvalue()[:200])  # truncated
    examples = {e.id: e for e in load_dataset(f"folder:{root}")}  # listing opens nothing
    for name in ("dog/bad.jpg", "owl/cut.jpg"):
        with pytest.raises(DataError, match=name.split("/")[1]) as err:
            examples[name].image()
        assert str(root / name) in str(err.value)
    zpath = tmp_path / "z.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("x.jpg", b"garbage")
    with pytest.raises(DataError, match=r"x\.jpg in .*z\.zip"):
        Example("x", "Q", ["a", "b"], "A", "a", (str(zpath), "x.jpg")).image()


def test_jsonl_dataset(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (5, 5), "blue").save(tmp_path / "img" / "1.png")
    absolute = tmp_path / "abs.png"
    Image.new("RGB", (5, 5), "green").save(absolute)
    rows = [{"image": "img/1.png", "question": "Q1?", "options": ["cat", "dog"], "answer": "b"},
            {"image": str(absolute), "question": "Q2?", "options": ["x", "y", "z"],
             "answer": "z", "id": "q2"}]
    path = tmp_path / "qs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = load_dataset(f"jsonl:{path}")
    assert (a.id, a.question, a.options, a.answer, a.label) == ("line1", "Q1?", ["cat", "dog"],
                                                                 "B", "dog")
    assert (b.id, b.answer, b.label) == ("q2", "C", "z")  # option text -> its letter
    assert a.image().getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("bad", [
    "{not json",
    '{"image": "a.png", "question": "Q", "options": ["x", "y"]}',                  # no answer
    '{"image": "a.png", "question": "Q", "options": ["x", "y"], "answer": "E"}',   # not an option
    '{"image": "a.png", "question": "Q", "options": "x y", "answer": "A"}',        # not a list
    '{"image": "gone.png", "question": "Q", "options": ["x", "y"], "answer": "A"}',  # no image
])
def test_jsonl_bad_lines_are_named(tmp_path, bad):
    Image.new("RGB", (5, 5)).save(tmp_path / "a.png")
    good = '{"image": "a.png", "question": "Q", "options": ["x", "y"], "answer": "A"}'
    path = tmp_path / "qs.jsonl"
    path.write_text(good + "\n" + bad + "\n")
    with pytest.raises(DataError, match="line 2"):
        load_dataset(f"jsonl:{path}")


# ---------------------------------------------------------------- the adaptation set

def test_adaptation_set_is_a_seeded_uniform_draw_without_labels():
    pool = load_dataset("shapes")
    drawn = draw_adaptation_set(pool, 20, seed=0)
    assert len(drawn) == 20 and len({e.id for e in drawn}) == 20
    assert all(e.answer is None and e.label is None for e in drawn)
    by_id = {e.id: e for e in pool}
    assert all(by_id[e.id].question == e.question for e in drawn)
    assert [e.id for e in draw_adaptation_set(pool, 20, seed=0)] == [e.id for e in drawn]
    assert [e.id for e in draw_adaptation_set(pool, 20, seed=1)] != [e.id for e in drawn]
    assert len(draw_adaptation_set(pool, len(pool), seed=0)) == len(pool)
    assert pool[0].answer is not None  # the pool keeps its labels for evaluation


def test_adaptation_set_size_errors():
    pool = load_dataset("shapes")
    for k in (0, -1, len(pool) + 1):
        with pytest.raises(DataError, match="between 1 and 200"):
            draw_adaptation_set(pool, k, seed=0)


def test_biased_adaptation_set_draws_from_num_classes_classes():
    pool = load_dataset("shapes")
    for seed in range(5):
        drawn = draw_adaptation_set(pool, 20, seed, sampling="biased", num_classes=2)
        labels = {next(p.label for p in pool if p.id == e.id) for e in drawn}
        assert len(labels) <= 2 and all(e.label is None for e in drawn)
    with pytest.raises(DataError, match="num_classes"):
        draw_adaptation_set(pool, 5, 0, sampling="biased")
    with pytest.raises(DataError, match="num_classes"):
        draw_adaptation_set(pool, 5, 0, sampling="biased", num_classes=5)
    with pytest.raises(DataError, match="pool of 50"):  # 200 shapes / 4 classes = 50 per class
        draw_adaptation_set(pool, 51, 0, sampling="biased", num_classes=1)
    with pytest.raises(DataError, match="labels"):
        draw_adaptation_set([strip_labels(e) for e in pool], 5, 0, "biased", 2)
    with pytest.raises(DataError, match="sampling"):
        draw_adaptation_set(pool, 5, 0, sampling="stratified")
