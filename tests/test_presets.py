"""presets.py as a spec: each preset's rows (in the dataset's real columns) -> Examples with the
Appendix C prompts, the counting score, the generic hub loader and its name syntax, and the
download path (monkeypatched: no test touches the network). Parquet-only tests skip without
pyarrow; every preset is covered without it (in-memory rows and .jsonl copies)."""

import io
import json
import math
import pickle
import random
import sys
import zipfile

import pytest
from PIL import Image

from conftest import shared_path
from harness import benchmarks, hub
from harness import presets as B
import data
from data import DTD_PROMPT, RECOGNITION_PROMPT, DataError, Example, strip_labels
from harness.presets import load_dataset

TAIL = " Please respond with only the corresponding option letter ({}). Do not include any " \
       "explanation or extra text. \n Options:\n"


def png(colour=(200, 30, 30), size=(6, 5)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def hub_image(colour=(200, 30, 30)):
    """The hub's parquet image struct, as pyarrow's to_pylist gives it."""
    return {"bytes": png(colour), "path": None}


# ---------------------------------------------------------------- prompts

def test_prompts_follow_appendix_c_as_quoted_in_the_notes():
    notes = shared_path("paper-notes.md").read_text(encoding="utf-8").replace("\n", " ")
    hint = ("Hint: Please answer the question and provide the correct option letter, e.g., A, B, "
            "C, D, at the end.")
    assert B.MATHVISTA_PROMPT.startswith(hint + "\nDo not include any explanation or extra text."
                                         "\nQuestion: {question}\nChoices:\n")
    assert hint in notes and "Please answer directly with only the letter of the correct" in notes
    assert benchmarks.REALWORLDQA_INSTRUCTION == ("Please answer directly with only the letter of the "
                                         "correct option and nothing else.")
    assert "Please respond with only the corresponding option letter (A or B)." in notes
    assert "put your final answer within \\boxed{}" in hub.FREEFORM_PROMPT.format(question="q")
    assert hub.letters_phrase(2) == "A or B" and hub.letters_phrase(3) == "A, B, or C"
    assert "(" + hub.letters_phrase(4) + ")" in RECOGNITION_PROMPT


def test_a_prompt_with_foreign_fields_is_refused():
    row = {"question": "Q?", "options": ["a", "b"], "answer": "0", "image": hub_image()}
    with pytest.raises(DataError, match="fields"):
        B.preset_examples("ai2d", [row], prompt=RECOGNITION_PROMPT)
    ex = B.preset_examples("ai2d", [row], prompt="{question} [{letters}]\n{options}")[0]
    assert ex.question == "Q? [A or B]\nA. a\nB. b"


# ---------------------------------------------------------------- recognition presets

def test_dtd_rows_become_four_way_texture_questions():
    rows = [{"image": hub_image(), "label": i} for i in (0, 30, 46, 5)]
    exs = B.preset_examples("dtd", rows, seed=3)
    rng = random.Random(3)  # one stream in row order, as resisc45.py does
    for ex, i in zip(exs, (0, 30, 46, 5)):
        q, opts, ans = data.make_choice_question(B.DTD_CLASSES[i], B.DTD_CLASSES, rng, DTD_PROMPT)
        assert (ex.question, ex.options, ex.answer) == (q, opts, ans)
        assert ex.label == B.DTD_CLASSES[i] == ex.options["ABCD".index(ex.answer)]
        assert "what texture it shows" in ex.question and len(set(ex.options)) == 4
    assert exs[1].label == "polka-dotted" and len(B.DTD_CLASSES) == 47
    assert isinstance(exs[0], hub.EncodedExample) and exs[0].image().size == (6, 5)
    assert B.preset_examples("dtd", [{"image": hub_image(), "label": "woven"}])[0].label == "woven"


def test_imagenet_r_rows_use_readable_class_names_and_the_recognition_prompt():
    names = ["afghan_hound", "goldfish", "great_white_shark", "hammerhead", "hen"]
    rows = [{"image": hub_image(), "wnid": "n0", "class_name": c} for c in names]
    exs = B.preset_examples("imagenet-r", rows)
    assert [e.label for e in exs][0] == "afghan hound"
    assert all(e.label == e.options["ABCD".index(e.answer)] for e in exs)
    assert exs[0].question.startswith("Look at the given image and identify what it shows.")
    assert "great white shark" in " ".join(o for e in exs for o in e.options)
    assert [e.id for e in exs] == [f"imagenet-r-{i:05d}" for i in range(5)]  # no label in ids


# ---------------------------------------------------------------- lettered VQA presets

def test_ai2d_answer_is_an_index_into_its_options():
    row = {"question": "Which stage is shown?", "options": ["egg", "larva", "pupa", "adult"],
           "answer": "2", "image": hub_image()}
    ex = B.preset_examples("ai2d", [row])[0]
    assert ex.question == ("Which stage is shown?" + TAIL.format("A, B, C, or D")
                           + "A. egg\nB. larva\nC. pupa\nD. adult")
    assert (ex.options, ex.answer, ex.label, ex.id) == (row["options"], "C", "pupa", "ai2d-00000")
    digits = dict(row, options=["1", "2", "3", "4"], answer="1")  # an index, not the text "1"
    assert B.preset_examples("ai2d", [digits])[0].answer == "B"


def test_mme_yes_no_becomes_a_no_b_yes():
    rows = [{"question_id": "code/0020.png", "image": hub_image(), "category": "code_reasoning",
             "question": "Is a c++ code shown in the picture? Please answer yes or no.",
             "answer": a} for a in ("Yes", "No")]
    yes, no = B.preset_examples("mme", rows)
    assert yes.question == ("Is a c++ code shown in the picture? Please answer yes or no."
                            + TAIL.format("A or B") + "A. No\nB. Yes")
    assert (yes.options, yes.answer, yes.label) == (["No", "Yes"], "B", "Yes")
    assert (no.answer, no.label) == ("A", "No") and yes.id != no.id
    with pytest.raises(DataError, match="Yes or No"):
        B.preset_examples("mme", [dict(rows[0], answer="maybe")])


def test_seed_keeps_image_questions_and_its_lettered_answer():
    row = {"question_id": "101669", "question": "How many towels are in the image?",
           "choice_a": "One", "choice_b": "Two", "choice_c": "Three", "choice_d": "Four",
           "answer": "A", "data_type": "image", "image": [hub_image()]}
    video = dict(row, question_id="v1", data_type="video", image=[hub_image(), hub_image()])
    exs = B.preset_examples("seed", [row, video])
    assert len(exs) == 1 and exs[0].id == "101669"
    assert exs[0].question == ("How many towels are in the image?" + TAIL.format("A, B, C, or D")
                               + "A. One\nB. Two\nC. Three\nD. Four")
    assert (exs[0].answer, exs[0].label) == ("A", "One") and exs[0].image().size == (6, 5)


def test_realworldqa_keeps_lettered_questions_verbatim():
    q = ("In which direction is the front wheel of the car on the right side facing?\n\nA. Left\n"
         "B. Straight\nC. Right\n\n" + benchmarks.REALWORLDQA_INSTRUCTION)
    rows = [{"image": hub_image(), "question": q, "answer": "B"},
            {"image": hub_image(), "question": "How many cars?\nPlease answer directly with a "
             "single word or number.", "answer": "3"},
            {"image": hub_image(), "question": "Is it day?\nA. Yes\nB. No", "answer": "A"}]
    exs = B.preset_examples("realworldqa", rows)
    assert len(exs) == 2 and exs[0].question == q
    assert (exs[0].options, exs[0].answer, exs[0].label) == (["Left", "Straight", "Right"], "B",
                                                             "Straight")
    assert exs[1].question == "Is it day?\nA. Yes\nB. No\n" + benchmarks.REALWORLDQA_INSTRUCTION


def test_mathvista_keeps_multiple_choice_only_in_its_hint_format():
    mc = {"pid": "5", "question": "Find $m\\angle H$", "decoded_image": hub_image(),
          "choices": ["97", "102", "107", "122"], "answer": "97", "question_type": "multi_choice"}
    free = {"pid": "1", "question": "What is the total?", "decoded_image": hub_image(),
            "choices": None, "answer": "3", "question_type": "free_form"}
    exs = B.preset_examples("mathvista", [free, mc])
    assert [e.id for e in exs] == ["5"]
    assert exs[0].question == (
        "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, "
        "D, at the end.\nDo not include any explanation or extra text.\nQuestion: Find "
        "$m\\angle H$\nChoices:\n(A) 97\n(B) 102\n(C) 107\n(D) 122")
    assert (exs[0].answer, exs[0].label) == ("A", "97")


# ---------------------------------------------------------------- counting (CAPTURe)

def test_count_score_is_one_minus_symmetric_percentage_error():
    assert data.count_score(10, 10) == 1.0 and data.count_score(0, 0) == 1.0
    assert data.count_score(8, 10) == pytest.approx(1 - 2 / 18)
    assert data.count_score(30, 10) == pytest.approx(0.5) and data.count_score(-5, 5) == 0.0
    assert data.count_score(None, 7) == 0.0 and data.count_score(math.nan, 7) == 0.0
    for p, t in [(3, 9), (12.5, 4), (0, 6)]:
        assert data.count_score(p, t) == pytest.approx(data.count_score(t, p))
        assert 0.0 <= data.count_score(p, t) <= 1.0
    preds, truths = [63, None, 30], [63, 99, 20]  # dataset score = mean = 1 - sMAPE
    assert sum(map(data.count_score, preds, truths)) / 3 == pytest.approx((1 + 0 + 0.8) / 3)


def _capture_files(root, zipped=True):
    meta = [{"image_file": "1455.jpg", "ground_truth": 63, "object": "keyboard keys"},
            {"image_file": "202.jpg", "ground_truth": 9, "object": "balls"}]
    (root / "real_metadata.json").write_text(json.dumps(meta))
    if zipped:
        with zipfile.ZipFile(root / "real_dataset.zip", "w") as z:
            for m in meta:
                z.writestr("dataset/" + m["image_file"], png())
    else:
        (root / "dataset").mkdir()
        for m in meta:
            (root / "dataset" / m["image_file"]).write_bytes(png())


@pytest.mark.parametrize("zipped", [True, False])
def test_capture_counts_are_free_form_questions(tmp_path, zipped):
    _capture_files(tmp_path, zipped)
    exs = load_dataset("capture", data_dir=str(tmp_path))
    assert [(e.id, e.options, e.answer, e.label) for e in exs] == [
        ("1455", [], "63", "63"), ("202", [], "9", "9")]
    assert all(data.is_counting(e) for e in exs) and exs[1].image().size == (6, 5)
    assert exs[0].question.startswith("Count the exact number of keyboard keys in the image. "
                                      "Assume the pattern of keyboard keys continues behind")
    assert exs[0].question.endswith("put your final answer within \\boxed{}.")
    assert not data.is_counting(B.preset_examples("mme", [{"question": "Q? Please answer yes or "
                                                        "no.", "answer": "No",
                                                        "image": hub_image()}])[0])
    (tmp_path / "real_dataset.zip").unlink(missing_ok=True)
    if not zipped:
        (tmp_path / "dataset" / "202.jpg").unlink()
    with pytest.raises(DataError, match="missing"):
        load_dataset("capture", data_dir=str(tmp_path))


# ---------------------------------------------------------------- generic hub loader

def test_hub_name_query_string():
    repo, cols = hub.parse_hub_name("hub:lmms-lab/MMBench_EN?options=A,B,C,D&answer_format=letter"
                                  "&split=dev&where=l2-category:attribute%20reasoning")
    assert repo == "lmms-lab/MMBench_EN"
    assert cols == {"options": "A,B,C,D", "answer_format": "letter", "split": "dev",
                    "where": "l2-category:attribute reasoning"}
    assert hub.parse_hub_name("hub:a/b") == ("a/b", {})
    for bad in ("hub:a/b?colour=red", "hub:no-owner?image=i", "hub:a/b?image"):
        with pytest.raises(DataError, match="hub:OWNER/NAME"):
            hub.parse_hub_name(bad)


def test_hub_column_mapping_modes(tmp_path):
    img = hub_image()
    mc = [{"q": "Pick", "A": "x", "B": "y", "C": "z", "D": None, "ans": "C", "idx": 7, "img": img}]
    ex = hub.hub_examples(mc, {"image": "img", "question": "q", "options": "A,B,C,D",
                             "answer": "ans", "id": "idx"})[0]
    assert (ex.id, ex.options, ex.answer, ex.label) == ("7", ["x", "y", "z"], "C", "z")
    assert ex.question.startswith("Pick" + TAIL.format("A, B, or C"))
    labelled = [{"image": img, "label": i} for i in range(4)]
    exs = hub.hub_examples(labelled, {"label": "label"}, {"label": ["cat", "dog", "fox", "owl"]})
    assert [e.label for e in exs] == ["cat", "dog", "fox", "owl"]
    assert exs[0].question.startswith("Look at the given image")
    with pytest.raises(DataError, match="names=FILE"):
        hub.hub_examples(labelled, {"label": "label"})
    names_file = tmp_path / "names.txt"
    names_file.write_text("ant\nbee\n\ncat\ndog\n")
    exs = hub.hub_examples(labelled, {"label": "label", "names": str(names_file)})
    assert [e.label for e in exs] == ["ant", "bee", "cat", "dog"]
    counts = [{"image": img, "question": "How many dots?", "answer": 12, "kind": "k"},
              {"image": img, "question": "skip", "answer": 1, "kind": "other"}]
    (ex,) = hub.hub_examples(counts, {"where": "kind:k"})
    assert (ex.options, ex.answer) == ([], "12") and data.is_counting(ex)
    assert ex.question == hub.FREEFORM_PROMPT.format(question="How many dots?")


def test_answer_index_formats():
    opts = ["1", "2", "3"]
    assert hub.answer_index("2", opts, "index") == 2 and hub.answer_index("2", opts, "text") == 1
    assert hub.answer_index("b", opts, "letter") == 1 and hub.answer_index(0, opts) == 0
    assert hub.answer_index("3", opts) == 2 and hub.answer_index("C", ["x", "y", "z"]) == 2
    for answer, fmt in [("7", "index"), ("Q", "letter"), ("zz", "auto"), ("1", "bogus")]:
        with pytest.raises(DataError):
            hub.answer_index(answer, opts, fmt)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_hub_loader_reads_a_local_jsonl_copy_through_load_dataset(tmp_path):
    (tmp_path / "img.png").write_bytes(png())
    row = {"image": "img.png", "question": "Colour?", "choices": ["red", "blue"],
           "answer": "red", "uid": "u1"}
    _jsonl(tmp_path / "validation.jsonl", [row])
    _jsonl(tmp_path / "test.jsonl", [dict(row, uid="u2")])
    name = "hub:someone/colours?options=choices&answer_format=text&id=uid"
    (ex,) = load_dataset(name, data_dir=str(tmp_path))
    assert (ex.id, ex.answer, ex.label, ex.image().size) == ("u2", "A", "red", (6, 5))
    (ex,) = load_dataset(name + "&split=validation", "test", data_dir=str(tmp_path))
    assert ex.id == "u1"  # split= in the name wins over the split argument
    with pytest.raises(DataError, match=r"lack column\(s\) \[.opts.\]"):
        load_dataset("hub:someone/colours?options=opts", data_dir=str(tmp_path))


def test_presets_read_local_jsonl_copies_and_map_splits(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    _jsonl(tmp_path / "testmini.jsonl", [{"pid": "9", "question": "Which?", "decoded_image":
                                          "a.png", "choices": ["p", "q"], "answer": "q",
                                          "question_type": "multi_choice"}])
    (ex,) = load_dataset("mathvista", "test", data_dir=str(tmp_path))  # test -> testmini
    assert (ex.id, ex.answer) == ("9", "B") and ex.image().size == (6, 5)
    with pytest.raises(DataError, match="splits"):
        load_dataset("mathvista", "train", data_dir=str(tmp_path))
    _jsonl(tmp_path / "train.jsonl", [{"image": "a.png", "label": i} for i in range(5)])
    assert [e.label for e in load_dataset("dtd", "train", data_dir=str(tmp_path))][:2] == [
        "banded", "blotchy"]
    with pytest.raises(DataError, match="No test data"):
        load_dataset("ai2d", data_dir=str(tmp_path / "nowhere"))


# ---------------------------------------------------------------- downloads, parquet, plumbing

def test_offline_download_says_how_to_pass_a_local_copy(monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    for name, repo in [("mme", "lmms-lab/MME"), ("capture", "atinp/CAPTURe"),
                       ("hub:a/b?label=y", "a/b")]:
        with pytest.raises(DataError, match="--data-dir") as err:
            load_dataset(name)
        assert f"hf download {repo} --repo-type dataset" in str(err.value)
    assert "d6c9023f017b564f7b3ccccf5348166bce8fdbcd" in str(
        pytest.raises(DataError, load_dataset, "mme").value)


def test_download_is_pinned_and_reads_what_it_fetched(tmp_path, monkeypatch):
    import huggingface_hub
    calls = []
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.png").write_bytes(png())
    _jsonl(tmp_path / "data" / "test.jsonl", [{"question": "Q?", "options": ["a", "b", "c"],
                                               "answer": "1", "image": "x.png"}])

    def fake(**kwargs):
        calls.append(kwargs)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    (ex,) = load_dataset("ai2d")
    assert (ex.answer, ex.label) == ("B", "b")
    assert calls == [dict(repo_id="lmms-lab/ai2d", repo_type="dataset",
                          revision="c83a9b9692933aff8349157c88a413df9d02c4e5",
                          allow_patterns=["*test-*.parquet", "*test/*.parquet"])]
    assert {p.revision for p in B.PRESETS.values()} - {"main"} == {
        p.revision for p in B.PRESETS.values() if len(p.revision) == 40}


def test_parquet_without_pyarrow_names_the_install(tmp_path, monkeypatch):
    (tmp_path / "test-00000-of-00001.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match="pip install pyarrow"):
        load_dataset("mme", data_dir=str(tmp_path))


def test_parquet_branch_against_a_stub_of_the_pyarrow_calls_it_makes(tmp_path, monkeypatch):
    """read_schema(f).names/.metadata and read_table(f, columns=...).to_pylist(), as pyarrow has
    them; the real thing runs in the next test where pyarrow is installed."""
    import types
    names = ["ant", "bee", "cat", "dog"]
    meta = {"info": {"features": {"label": {"_type": "ClassLabel", "names": names}}}}
    table = [{"image": hub_image(), "label": i, "extra": 0} for i in range(4)]
    calls = []
    stub = types.SimpleNamespace(
        read_schema=lambda f: types.SimpleNamespace(names=["image", "label", "extra"], metadata={
            b"huggingface": json.dumps(meta).encode()}),
        read_table=lambda f, columns: calls.append(columns) or types.SimpleNamespace(
            to_pylist=lambda: [{k: r[k] for k in columns} for r in table]))
    monkeypatch.setitem(sys.modules, "pyarrow", types.ModuleType("pyarrow"))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", stub)
    (tmp_path / "default" / "test").mkdir(parents=True)  # the parquet-converter layout
    (tmp_path / "default" / "test" / "0000.parquet").write_bytes(b"PAR1")
    exs = load_dataset("hub:x/y?label=label", data_dir=str(tmp_path))
    assert [e.label for e in exs] == names and calls == [["image", "label"]]
    with pytest.raises(DataError, match="lacks column"):
        load_dataset("hub:x/y?label=species", data_dir=str(tmp_path))


def test_parquet_shards_with_classlabel_names(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    names = ["ant", "bee", "cat", "dog", "elk"]
    meta = {"info": {"features": {"image": {"_type": "Image"},
                                  "label": {"_type": "ClassLabel", "names": names}}}}
    table = pa.table({"image": [hub_image() for _ in range(5)], "label": list(range(5))})
    table = table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "test-00000-of-00001.parquet")
    exs = load_dataset("hub:x/y?label=label", data_dir=str(tmp_path))
    assert [e.label for e in exs] == names and exs[4].image().size == (6, 5)


def test_encoded_examples_pickle_strip_and_name_bad_bytes():
    ex = B.preset_examples("mme", [{"question": "Q? Please answer yes or no.", "answer": "Yes",
                                    "image": hub_image((1, 2, 3))}])[0]
    again = pickle.loads(pickle.dumps(ex))
    assert again.image().getpixel((0, 0)) == (1, 2, 3) and again.answer == "B"
    stripped = strip_labels(ex)
    assert isinstance(stripped, hub.EncodedExample) and stripped.answer is None
    bad = hub.make_example("bad-1", "Q", [], "1", "1", {"bytes": b"not an image", "path": None})
    with pytest.raises(DataError, match="bad-1"):
        bad.image()
    assert type(hub.make_example("p", "Q", [], "1", "1", "/x.png")) is Example
    with pytest.raises(DataError, match="no usable image"):
        hub.make_example("n", "Q", [], "1", "1", None)


def test_load_dataset_lists_the_benchmarks_and_keeps_data_py_names():
    with pytest.raises(DataError) as err:
        load_dataset("imagenet-z")
    assert len(B.PAPER_BENCHMARKS) == 16 and set(B.PAPER_BENCHMARKS) <= set(B.DATASETS)
    for name in B.PAPER_BENCHMARKS + ["shapes", "folder:PATH", "jsonl:PATH", "hub:OWNER/NAME"]:
        assert name in str(err.value)


def test_cli_knows_all_16_benchmarks_and_lists_them_for_an_unknown_name(tmp_path):
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "ttrv.py"), "--dataset", "imagenet-z",
                           "--output-dir", str(tmp_path / "run"), "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0 and "Unknown dataset 'imagenet-z'" in proc.stderr
    for name in B.PAPER_BENCHMARKS:
        assert name in proc.stderr


# ---------------------------------------------------------------- the seven new presets

def test_imagenet_family_and_food101_use_first_wordnet_lemmas_or_class_names():
    wordnet = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white "
               "shark, man-eater", "hammerhead, hammerhead shark", "hen"]
    rows = [{"image": hub_image(), "label": i} for i in range(5)]
    for name in ("imagenet", "imagenet-sketch"):
        exs = B.preset_examples(name, rows, seed=1, names={"label": wordnet})
        assert [e.label for e in exs] == ["tench", "goldfish", "great white shark", "hammerhead",
                                          "hen"]
        assert all(e.label == e.options["ABCD".index(e.answer)] for e in exs)
        assert exs[0].question.startswith("Look at the given image and identify what it shows.")
    exs = B.preset_examples("food101", rows, names={"label": ["apple_pie", "baklava", "bibimbap",
                                                              "churros", "donuts"]})
    assert exs[0].label == "apple pie" and len(exs[0].options) == 4
    rows = [{"image": hub_image(), "class_name": c} for c in ("ant", "bee", "cat", "dog")]
    assert [e.label for e in B.preset_examples("imagenet-a", rows)] == ["ant", "bee", "cat", "dog"]


def test_imagenet_v2_reads_its_class_index_folders(tmp_path):
    names = ["tench, Tinca tinca", "goldfish", "great_white_shark", "hammerhead", "hen"]
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    for i in range(5):
        (tmp_path / str(i)).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / str(i) / "a.jpeg")
    exs = load_dataset("imagenet-v2", data_dir=str(tmp_path))
    assert [e.label for e in exs] == ["tench", "goldfish", "great white shark", "hammerhead", "hen"]
    assert exs[0].image().size == (8, 8)
    with pytest.raises(DataError, match="classes.txt"):
        load_dataset("imagenet-v2")


def test_mathverse_shows_query_wo_keeps_multi_choice_and_letters_beyond_d():
    q = ("Please directly answer the question and provide the correct option letter, e.g., A, B, "
         "C, D.\nQuestion: Find x.\nChoices:\nA:1\nB:2\nC:3\nD:4\nE:5")
    rows = [{"image": hub_image(), "query_wo": q, "answer": "E", "question_type": "multi-choice"},
            {"image": hub_image(), "query_wo": "Find y.", "answer": "7",
             "question_type": "free-form"},
            {"image": hub_image(), "query_wo": q, "answer": "F", "question_type": "multi-choice"}]
    exs = B.preset_examples("mathverse", rows)
    assert len(exs) == 1 and exs[0].question == q.replace(
        "\nE:5", "\nE:5\n" + benchmarks.REALWORLDQA_INSTRUCTION)
    assert exs[0].options == ["1", "2", "3", "4", "5"] and exs[0].answer == "E"
    assert B.PRESETS["mathverse"].splits["test"] == "testmini"


def test_crpe_reads_its_jsonl_with_images_beside_it(tmp_path):
    (tmp_path / "abnormal_images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "abnormal_images" / "1.jpg")
    text = ("What is the man doing?\nA. riding\nB. eating\nC. sleeping\nD. flying\n"
            + benchmarks.REALWORLDQA_INSTRUCTION)
    row = {"question_id": 1, "image": "abnormal_images/1.jpg", "text": text, "answer": "B",
           "category": "predicate"}
    (tmp_path / "crpe_relation.jsonl").write_text(json.dumps(row) + "\n")
    (ex,) = load_dataset("crpe", data_dir=str(tmp_path))
    assert (ex.question, ex.answer, ex.label) == (text, "B", "eating")
    assert ex.image().size == (8, 8)
    row["image"] = "coco/val2017/000000000001.jpg"
    (tmp_path / "crpe_relation.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="COCO val2017"):
        load_dataset("crpe", data_dir=str(tmp_path))


def test_max_image_side_drops_larger_images(tmp_path):
    for i, size in enumerate([(1000, 1000), (1001, 20), (20, 1001), (64, 64)]):
        (tmp_path / f"c{i}").mkdir()
        Image.new("RGB", size).save(tmp_path / f"c{i}" / "x.png")
    kept = load_dataset(f"folder:{tmp_path}", max_image_side=1000)
    assert [e.id for e in kept] == ["c0/x.png", "c3/x.png"]
    assert len(load_dataset(f"folder:{tmp_path}")) == 4


def test_official_protocol_spells_options_and_prompts_as_the_official_files():
    rows = [{"image": hub_image(), "class_name": c} for c in ("golf_course", "a_b", "c_d", "e_f")]
    paper = B.preset_examples("imagenet-r", rows)[0]
    assert paper.label == "golf course"
    exs = B.preset_examples("imagenet-r", rows, prompt=B.official_prompt("imagenet-r"), spell=str)
    assert exs[0].label == "golf_course" and exs[0].question.startswith(" \n Look at the given")
    assert "golf_course" in exs[0].question
    ai2d = B.official_prompt("ai2d")
    assert ai2d.startswith("{question}\nChoose the correct answer") and "\n\nOptions:\n" in ai2d
    assert "\n\nOptions" not in B.official_prompt("seed") and "\nOptions" in B.official_prompt("seed")
    mme_rows = [{"image": hub_image(), "question": f"Is this a cat {i}? Please answer yes or no.",
                 "answer": "Yes"} for i in range(20)]
    mme = benchmarks.mme_examples(mme_rows, benchmarks.OFFICIAL_MME_PROMPT)
    assert {tuple(e.options) for e in mme} == {("No", "Yes"), ("Yes", "No")}   # A/B order varies
    assert all(e.label == "Yes" for e in mme)
    assert mme[0].question.startswith("Is this a cat 0? Please answer with yes or no. Please")
