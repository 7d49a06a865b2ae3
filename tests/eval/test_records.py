"""The typed eval and bench records read and write exactly the JSON that results/ holds."""

import json
from pathlib import Path

import pytest

from ctxprune.errors import CtxpruneError
from ctxprune.eval.records import BenchRecord, EvalRecord, GroupResult, read_record
from ctxprune.paths import json_text

RESULTS = Path(__file__).resolve().parents[2] / "results"


def committed_records() -> list[Path]:
    """Every committed JSON file under results/ whose kind is eval or bench."""
    out = []
    for path in sorted(RESULTS.rglob("*.json")):
        obj = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(obj, dict) and obj.get("kind") in ("eval", "bench"):
            out.append(path)
    return out


def test_results_hold_both_kinds():
    kinds = [json.loads(p.read_text())["kind"] for p in committed_records()]
    assert kinds.count("eval") >= 20 and kinds.count("bench") >= 3


@pytest.mark.parametrize("path", committed_records(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_committed_record_round_trips(path):
    text = path.read_text(encoding="utf-8")
    record = read_record(path)
    assert isinstance(record, EvalRecord if json.loads(text)["kind"] == "eval" else BenchRecord)
    assert record.to_json() == json.loads(text)
    # Same keys in the same order: written back, the file is byte for byte what was committed.
    assert json_text(record.to_json()) == text


def test_an_int8_eval_has_no_gflops_and_writes_none():
    record = read_record(RESULTS / "cpu_test_subset_int8.json")
    group = record.models[0].groups["transcribe/de"]
    assert group.gflops_encoder is None and group.wer is not None and group.bleu is None
    assert "gflops_encoder" not in group.to_json() and "bleu" not in group.to_json()


def test_older_files_without_optional_keys_load():
    obj = {
        "kind": "eval",
        "split": "test",
        "models": [{"name": "dense", "groups": {"translate/de": {"bleu": 20.0, "n": 3}}}],
    }
    record = EvalRecord.from_json(obj)
    (model,) = record.models
    assert record.rows is None and record.adapter is None and model.kind is None and model.gates is None
    assert model.task_groups("translate") == {"de": GroupResult(bleu=20.0, n=3)}
    assert model.task_groups("transcribe") == {}
    assert record.dense() is None and record.candidate("dense") is model
    assert model.groups["translate/de"].to_json() == {"bleu": 20.0, "n": 3}

    bench = BenchRecord.from_json({"kind": "bench", "results": [{"name": "d", "batch": 1, "median_ms": 2.0}]})
    assert bench.reference is None and bench.results[0].p25_ms is None


def test_dense_is_found_by_kind_not_position():
    models = [
        {"name": "ctx", "kind": "context", "groups": {}},
        {"name": "base", "kind": "dense", "groups": {}},
    ]
    record = EvalRecord.from_json({"kind": "eval", "split": "test", "models": models})
    assert record.dense().name == "base"


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"kind": "eval", "models": []}, '"split" and "models"'),
        ({"kind": "eval", "split": "test", "models": [{"groups": {}}]}, '"name" and "groups"'),
        ({"kind": "eval", "split": "test", "models": [{"name": "x", "groups": {"a/b": 3}}]}, '"groups"'),
        ({"kind": "bench", "results": [{"name": "x", "batch": 1}]}, '"median_ms"'),
        ({"kind": "bench"}, '"results"'),
    ],
)
def test_malformed_records_name_the_file_and_what_is_missing(tmp_path, obj, message):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(CtxpruneError, match=message) as error:
        read_record(path)
    assert str(path) in str(error.value)


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="unknown quality metric"):
        GroupResult(wer=0.1).metric("gflops_encoder")


def test_a_runtimes_bench_reads_as_its_natural_batch1_phase(tmp_path):
    def timing(ms: float) -> dict:
        return {"median_ms": ms, "p25_ms": ms - 0.1, "p75_ms": ms + 0.1, "repeats": 10, "tokens": 300}

    variants = ["hf-generate", "ours-dense-eager", "ours-dense-graphs", "ours-a", "ours-dense-graphs+guard"]
    obj = {
        "kind": "bench-runtimes",
        "device": "NVIDIA H100 80GB HBM3",
        "dtype": "fp16",
        "natural_batch1": {"rows": 27, "results": {v: timing(i + 1.0) for i, v in enumerate(variants)}},
        "fixed_batch1": {"results": {}},
    }
    path = tmp_path / "runtimes.json"
    path.write_text(json.dumps(obj))
    record = read_record(path)
    assert isinstance(record, BenchRecord) and record.device == "cuda"
    assert [(r.name, r.batch, r.median_ms, r.rows) for r in record.results] == [
        ("dense", 1, 3.0, 27),  # the graphed dense runtime; HF, eager and guarded variants left out
        ("a", 1, 4.0, 27),
    ]
    path.write_text(json.dumps({"kind": "bench-runtimes", "natural_batch1": {"results": {"x": {}}}}))
    with pytest.raises(CtxpruneError, match="runtimes.json"):
        read_record(path)
