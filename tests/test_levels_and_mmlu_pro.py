"""Evaluation as the papers report it, beyond avg@K: MATH-500's difficulty levels (read, chosen
alone with NAME:levelN, reported per level), the base model's maj@N of the votes, and MMLU-Pro
by name (10 options, letters A-J), each from a small local file written here in its hub format."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import answers
import data
import eval as evaluation
import math_answers
import vlm
from data import DataError
from harness import math_data, presets, report, run, tiny_math


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def math500(tmp_path):
    return write_jsonl(tmp_path / "test.jsonl", [
        {"problem": f"What is {i}+{i}?", "answer": str(2 * i), "level": level,
         "unique_id": f"test/{i}.json"} for i, level in enumerate([1, 5, 2, 5], 1)])


def test_math500_questions_keep_their_level_and_one_level_can_be_chosen(tmp_path):
    math500(tmp_path)
    assert [e.level for e in presets.load_dataset("math500", data_dir=str(tmp_path))] == [
        "1", "5", "2", "5"]
    five = presets.load_dataset("math500:level5", data_dir=str(tmp_path))
    assert [e.id for e in five] == ["test/2.json", "test/4.json"]
    assert data.strip_labels(five[0]).level == "5"      # a level is no label: adaptation keeps it


def test_a_level_that_is_not_there_names_the_levels_there_are(tmp_path):
    math500(tmp_path)
    with pytest.raises(DataError, match=r"no level-7 questions; its levels are 1, 2, 5: pass one"):
        presets.load_dataset("math500:level7", data_dir=str(tmp_path))


def test_a_bad_suffix_is_refused_before_any_download(monkeypatch):
    monkeypatch.setattr(math_data, "_download", lambda *a: pytest.fail("downloaded"))
    with pytest.raises(DataError, match=r"math500 takes no path after ':'; pass math500:levelN"):
        presets.load_dataset("math500:lvl5")


def test_jsonl_levels_in_either_spelling_and_a_file_without_levels(tmp_path):
    rows = [{"question": "1+1?", "answer": "2", "level": "Level 3"},
            {"question": "2+2?", "answer": "4", "level": 3}, {"question": "3+3?", "answer": "6"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    assert [e.level for e in presets.load_dataset(f"jsonl:{path}")] == ["3", "3", None]
    assert len(presets.load_dataset(f"jsonl:{path}:level3")) == 2
    plain = write_jsonl(tmp_path / "q.jsonl", rows[2:])
    with pytest.raises(DataError, match="gives no difficulty levels"):
        presets.load_dataset(f"jsonl:{plain}:level3")


def test_results_by_level_hold_accuracy_and_length_before_and_after():
    preds = [dict(correct=True, length=10, level="1"), dict(correct=False, length=30, level="5"),
             dict(correct=True, length=20, level="5"), dict(correct=True, length=4, level="10")]
    got = report.lengths_and_levels(preds)
    assert list(got["by_level"]) == ["1", "5", "10"]
    assert got["by_level"]["5"] == dict(total=2, accuracy=0.5, response_length=25.0)
    assert got["response_length"] == 16.0
    assert report.lengths_and_levels([dict(p, level=None) for p in preds]) == dict(
        response_length=16.0)
    after = report.lengths_and_levels([dict(p, correct=True, length=5) for p in preds])
    table = report.level_table([{"base": got, "adapted": after}])
    assert "| 5 | 2 | 50.00 | 100.00 | 25.0 | 5.0 |" in table.splitlines()


def test_a_greedy_evaluation_records_each_response_s_length_and_level(tmp_path):
    model, tokenizer = vlm.load(str(tiny_math.build_tiny_math(tmp_path / "m")))
    qs = [data.Example(f"m{i}", f"What is {i} + 1?", [], str(i + 1), None, None, level=lv)
          for i, lv in enumerate(["1", "2", "2"])]
    r = evaluation.evaluate(model, tokenizer, qs, max_new_tokens=5, progress=False)
    ids = tokenizer([p["response"] for p in r.predictions], add_special_tokens=False)["input_ids"]
    for p, tokens in zip(r.predictions, ids):
        assert len(tokens) <= p["length"] <= 5          # the end token counts, when there is one
    assert [p["level"] for p in r.predictions] == ["1", "2", "2"]
    assert set(report.lengths_and_levels(r.predictions)["by_level"]) == {"1", "2"}


def test_base_maj_at_n_is_the_graded_majority_of_the_votes(monkeypatch):
    monkeypatch.setattr(math_answers, "_timeout", lambda: None)
    qs = [data.Example("a", "1+1?", [], "2", None, None), data.Example("b", "2+2?", [], "4", None,
                                                                         None)]
    texts = {"a": ["\\boxed{2}", "\\boxed{3}", "\\boxed{2}", "no"],     # majority right
             "b": ["\\boxed{4}", "\\boxed{5}", "\\boxed{5}", "no"]}     # majority wrong
    monkeypatch.setattr(run, "votes", lambda s, examples, hp: ((e, texts[e.id]) for e in examples))
    hp = type("hp", (), dict(answer_reader="paper"))
    assert run.majority_at_n(None, qs, hp) == 0.5


# ----------------------------------------------------------------------------- MMLU-Pro

def mmlu_pro(tmp_path, answer="J", index=9):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    rows = [dict(question_id=70, question="Which one?", options=[f"opt {i}" for i in range(10)],
                 answer=answer, answer_index=index, cot_content="", category="law", src="x"),
            dict(question_id=71, question="Three?", options=["x", "y", "z"], answer="B",
                 answer_index=1, cot_content="", category="math", src="y")]
    pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")
    return str(tmp_path)


def test_mmlu_pro_is_ten_option_multiple_choice_read_by_letter(tmp_path):
    exs = presets.load_dataset("mmlu-pro", data_dir=mmlu_pro(tmp_path))
    e = exs[0]
    assert (e.id, e.kind, e.answer, e.label, len(e.options)) == ("70", "choice", "J", "opt 9", 10)
    assert "J. opt 9" in e.question and "\\boxed{}" in e.question
    assert [answers.extract(t, e) for t in ["\\boxed{J}", "The answer is (H).", "K"]] == [
        "J", "H", None]
    assert answers.extract("\\boxed{D}", exs[1]) is None       # past its three options
    assert evaluation.score("so \\boxed{J}", e)["correct"] is True


def test_mmlu_pro_letter_and_index_must_agree(tmp_path):
    with pytest.raises(DataError, match="answer J but answer_index 3"):
        presets.load_dataset("mmlu-pro", data_dir=mmlu_pro(tmp_path, index=3))


def test_the_unknown_dataset_message_lists_mmlu_pro_and_levels():
    with pytest.raises(DataError, match=r"known datasets: .*mmlu-pro.*NAME:levelN"):
        presets.load_dataset("mmlu_pro")
