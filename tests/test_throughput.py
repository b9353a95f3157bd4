"""Throughput without changing results (issue 17): images prepared in DataLoader workers,
length-bucketed evaluation batches, the base evaluation once for all seeds, TF32 on CUDA.

Each speed-up is checked for the thing a CPU can show: the same predictions, in dataset order,
as the plain way; fewer padded tokens; fewer evaluations. The speed itself is not measured here
(no GPU); docs/speed-and-memory.md says so.
"""
import dataclasses
import functools
import json

import pytest
import torch

import data
import eval as evaluation
import vlm
from harness import batches, cli, eval_cli, presets

SMALL = ["--num-samples", "2", "--rollouts", "3", "--prompts-per-step", "2", "--epochs", "1",
         "--eval-limit", "6", "--max-new-tokens", "2", "--eval-batch-size", "4", "--quiet",
         "--device", "cpu", "--no-save-model"]


@pytest.fixture(scope="module")
def model(tiny_dir):
    model, processor = vlm.load(str(tiny_dir))
    return model.eval(), processor


def mixed_sizes(n=10):
    """shapes questions with images of three sizes, so their prompts differ in length (the tiny
    Qwen processor gives 4 to 16 image tokens)."""
    sides = [112, 56, 84]
    return [dataclasses.replace(e, source=e.image().resize((sides[i % 3],) * 2))
            for i, e in enumerate(presets.load_dataset("shapes")[:n])]


def test_workers_give_the_same_predictions(model):
    examples = mixed_sizes(7)
    runs = [evaluation.evaluate(*model, examples, batch_size=3, max_new_tokens=4, progress=False,
                                prepare=functools.partial(batches.prompt_batches, num_workers=w))
            for w in (0, 2)]
    assert runs[0].predictions == runs[1].predictions
    assert [p["id"] for p in runs[1].predictions] == [e.id for e in examples]


def test_a_corrupt_image_in_a_worker_ends_in_its_own_sentence(model, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    examples = presets.load_dataset("shapes")[:3]
    examples[2] = dataclasses.replace(examples[2], source=str(tmp_path / "bad.png"))
    with pytest.raises(data.DataError) as caught:
        evaluation.evaluate(*model, examples, batch_size=2, max_new_tokens=1, progress=False,
                            prepare=functools.partial(batches.prompt_batches, num_workers=1),
                            bucket=False)
    message = str(caught.value)
    assert message.startswith("Cannot read image") and "bad.png" in message
    assert "Traceback" not in message and "worker" not in message


def test_length_buckets_pad_less_and_give_the_same_predictions_in_dataset_order(model,
                                                                              monkeypatch):
    examples = mixed_sizes(12)
    padded, real_generate = [], evaluation.generate

    def counting(model_, inputs, **kw):
        padded.append(int((inputs["attention_mask"] == 0).sum()))
        return real_generate(model_, inputs, **kw)
    monkeypatch.setattr(evaluation, "generate", counting)
    runs = {}
    for bucket in (False, True):
        padded.clear()
        runs[bucket] = evaluation.evaluate(*model, examples, batch_size=3, max_new_tokens=4,
                                           progress=False, bucket=bucket)
        runs[bucket, "padding"] = sum(padded)
    assert runs[True].predictions == runs[False].predictions       # dataset order, same answers
    assert [p["id"] for p in runs[True].predictions] == [e.id for e in examples]
    assert runs[True, "padding"] < runs[False, "padding"]
    sizes = [data.image_size(examples[i]) for i in evaluation.length_order(examples)]
    assert sizes == sorted(sizes, key=lambda s: s[0] * s[1])


def test_the_base_model_is_evaluated_once_for_all_seeds(tmp_path, tiny_dir, monkeypatch):
    calls, real = [], evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "run"
    assert cli.main(["--model", str(tiny_dir), *SMALL, "--seeds", "0", "1", "2",
                     "--output-dir", str(out)]) == 0
    assert len(calls) == 1 + 3                                # base once, adapted per seed
    bases = []
    for s in (0, 1, 2):
        results = json.loads((out / f"seed-{s}" / "results.json").read_text())
        bases.append({k: v for k, v in results["base"].items() if k != "answer_entropy"})
        assert (out / f"seed-{s}" / "predictions_base.jsonl").read_text() == (
            out / "seed-0" / "predictions_base.jsonl").read_text()
    assert bases[0] == bases[1] == bases[2] and bases[0]["total"] == 6


def test_tf32_is_switched_on_for_cuda_only_at_startup(monkeypatch, tmp_path, tiny_cache):
    before = torch.get_float32_matmul_precision()
    try:
        cli.use_tf32("cpu")
        assert torch.get_float32_matmul_precision() == before == "highest"
        cli.use_tf32("cuda")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    seen = []
    monkeypatch.setattr(cli, "use_tf32", seen.append)
    monkeypatch.setattr(presets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(
        data.DataError("stop here.")))
    assert cli.main(["--output-dir", str(tmp_path / "r"), "--quiet", "--device", "cpu"]) == 1
    monkeypatch.setenv("TTRV_CACHE", str(tiny_cache))      # `tiny` is there: nothing is built
    assert eval_cli.main(["--model", "tiny", "--device", "cpu"]) == 1
    assert seen == ["cpu", "cpu"]


def test_the_default_number_of_workers_is_zero_on_the_cpu():
    assert batches.default_workers("cpu") == 0
    assert 1 <= batches.default_workers("cuda") <= 4
