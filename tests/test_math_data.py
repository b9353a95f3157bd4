"""Spec for harness/math_data.py and jsonl math rows: TTRL's benchmarks by name, each read from a
small local file written here in its hub format, and the errors of bad math data."""
import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data
from data import DataError
from harness import math_data, presets


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_math500_jsonl(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [
        {"problem": "What is $1+1$?", "solution": "...", "answer": "2", "subject": "Algebra",
         "level": 1, "unique_id": "test/algebra/1.json"},
        {"problem": " Simplify $\\frac{2}{4}$. ", "solution": "...", "answer": "\\frac{1}{2}",
         "subject": "Algebra", "level": 2, "unique_id": "test/algebra/2.json"}])
    exs = presets.load_dataset("math500", data_dir=str(tmp_path))
    assert [(e.id, e.question, e.answer) for e in exs] == [
        ("test/algebra/1.json", "What is $1+1$?", "2"),
        ("test/algebra/2.json", "Simplify $\\frac{2}{4}$.", "\\frac{1}{2}")]
    e = exs[0]
    assert (e.options, e.source, e.kind) == ([], None, "math")
    assert not data.is_counting(e) and data.strip_labels(e).kind == "math"


def test_aime24_parquet_int_answers(tmp_path):
    pq.write_table(pa.table({"ID": ["2024-I-1", "2024-II-4"], "Problem": ["P1", "P2"],
                             "Solution": ["S1", "S2"], "Answer": pa.array([204, 33], pa.int64())}),
                   tmp_path / "aime_2024_problems.parquet")
    exs = presets.load_dataset("aime24", data_dir=str(tmp_path))
    assert [(e.id, e.question, e.answer) for e in exs] == [("2024-I-1", "P1", "204"),
                                                            ("2024-II-4", "P2", "33")]


def test_amc23_float_answers_become_integers(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": pa.array([0, 1], pa.int64()), "problem": ["Q0", "Q1"],
                             "answer": pa.array([142.0, 0.5], pa.float64()),
                             "url": ["u0", "u1"]}),
                   tmp_path / "data" / "train-00000-of-00001.parquet")
    exs = presets.load_dataset("amc23", data_dir=str(tmp_path))
    assert [(e.id, e.answer) for e in exs] == [("0", "142"), ("1", "0.5")]


def write_gpqa(path, n=6):
    cols = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
            "Incorrect Answer 3", "Subdomain"]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for i in range(n):
            w.writerow({"Record ID": f"rec{i}", "Question": f"Question {i},\nwith two lines?",
                        "Correct Answer": f"right {i}", "Incorrect Answer 1": f"wrong a{i}",
                        "Incorrect Answer 2": f"wrong b{i}", "Incorrect Answer 3": f"wrong c{i}",
                        "Subdomain": "Physics"})
    return path


def test_gpqa_diamond_csv_shuffled_with_a_fixed_seed(tmp_path):
    path = str(write_gpqa(tmp_path / "gpqa_diamond.csv"))
    exs = presets.load_dataset("gpqa-diamond", data_dir=path)
    assert len(exs) == 6 and exs[0].id == "rec0"
    for i, e in enumerate(exs):
        assert sorted(e.options) == sorted([f"right {i}", f"wrong a{i}", f"wrong b{i}",
                                            f"wrong c{i}"])
        assert e.options[data.LETTERS.index(e.answer)] == e.label == f"right {i}"
        assert e.question.startswith(f"Question {i},\nwith two lines?\n\nA. {e.options[0]}\n")
        assert e.kind == "choice" and e.source is None   # votes on letters
    assert len({e.answer for e in exs}) > 1                          # the slot moves
    again = presets.load_dataset("gpqa-diamond", data_dir=path)
    other = presets.load_dataset("gpqa-diamond", data_dir=path, seed=1)
    assert [e.options for e in again] == [e.options for e in exs]
    assert [e.options for e in other] != [e.options for e in exs]


def test_gpqa_without_token_says_so_before_any_download(monkeypatch):
    def no_download(*args):
        raise AssertionError("must not download")
    monkeypatch.setattr(math_data, "_token", lambda: None)
    monkeypatch.setattr(math_data, "_download", no_download)
    with pytest.raises(DataError, match="gated.*HF_TOKEN"):
        presets.load_dataset("gpqa-diamond")


def test_hub_download_failure_is_one_sentence(monkeypatch):
    monkeypatch.setattr(math_data, "_token", lambda: "hf_x")
    with pytest.raises(DataError, match="Could not download Idavidrein/gpqa"):
        presets.load_dataset("gpqa-diamond")          # HF_HUB_OFFLINE=1 / no network


def test_unknown_benchmark_lists_the_math_ones():
    with pytest.raises(DataError, match="Unknown dataset 'aime25'.*math500.*aime24.*amc23.*"
                                        "gpqa-diamond"):
        presets.load_dataset("aime25")


def test_missing_file_and_missing_column(tmp_path):
    with pytest.raises(DataError, match="No test.jsonl"):
        presets.load_dataset("math500", data_dir=str(tmp_path))
    write_jsonl(tmp_path / "test.jsonl", [{"problem": "Q", "unique_id": "u"}])
    with pytest.raises(DataError, match="lack column"):
        presets.load_dataset("math500", data_dir=str(tmp_path))


def test_unreadable_gold_answer_names_the_question(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"problem": "Q", "answer": "??", "unique_id": "u7"}])
    with pytest.raises(DataError, match="math500 question u7 has answer '\\?\\?'"):
        presets.load_dataset("math500", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- jsonl:PATH

def test_jsonl_question_answer_rows_are_math(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "2+2?", "answer": "4"},
                                              {"id": "q2", "question": "Half?", "answer": 0.5}])
    exs = presets.load_dataset(f"jsonl:{path}")
    assert [(e.id, e.question, e.answer, e.kind, e.options) for e in exs] == [
        ("line1", "2+2?", "4", "math", []), ("q2", "Half?", "0.5", "math", [])]
    assert data.drop_large_images(exs, 10) == exs                  # no image to measure


@pytest.mark.parametrize("row, message", [
    ({"question": "2+2?"}, "line 1 has no answer"),
    ({"question": "2+2?", "answer": ""}, "line 1 has no answer"),
    ({"question": "2+2?", "answer": "??"}, "line 1 has answer '\\?\\?', which math-verify cannot"),
    ({"answer": "4"}, "line 1 has no question"),
])
def test_jsonl_bad_math_rows(tmp_path, row, message):
    path = write_jsonl(tmp_path / "p.jsonl", [row])
    with pytest.raises(DataError, match=message):
        presets.load_dataset(f"jsonl:{path}")


def test_text_only_example_has_no_image():
    e = math_data.math_example("x", "Q", "1", "here")
    assert e.image() is None and e.kind == "math"          # a text-only prompt (vlm.prompt_inputs)
