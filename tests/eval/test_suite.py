"""`ctxprune eval` and `ctxprune bench` through their Python API: a tiny random Whisper for the
mechanics, the real Whisper base with a shipped gate set for the measured savings."""

import json
from pathlib import Path

import pytest

from ctxprune.data.manifest import read_manifest
from ctxprune.errors import CtxpruneError
from ctxprune.eval.latency import bench_latency, mixed_rows
from ctxprune.eval.suite import Candidate, evaluate_candidates, summarize
from ctxprune.paths import ARTIFACTS, predictor_digest
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import StackSpec


def test_random_baselines_measure_what_ran(tiny_model_dir, tiny_corpus):
    candidates = [
        Candidate("dense", "dense"),
        Candidate.random(0.0, "decoder", seed=0),
        Candidate.random(1.0, "decoder", seed=0),
    ]
    spec = StackSpec(str(tiny_model_dir))
    options = DecodeOptions(max_new_tokens=4)
    result = evaluate_candidates(
        candidates, tiny_corpus, spec, "test", limit=2, batch_size=4, options=options
    )
    record = result.to_json()  # the JSON `ctxprune eval` writes
    dense, none_off, all_off = record["models"]
    for key, d in dense["groups"].items():
        assert none_off["groups"][key]["gflops_decoder"] == pytest.approx(d["gflops_decoder"])
        metric = "wer" if "wer" in d else "bleu"
        assert none_off["groups"][key][metric] == d[metric]
        assert all_off["groups"][key]["gflops_decoder"] < 0.5 * d["gflops_decoder"]
        assert all_off["groups"][key]["gflops_encoder"] == pytest.approx(d["gflops_encoder"])
        assert all_off["groups"][key]["achieved_sparsity"] == 1.0 and d["achieved_sparsity"] == 0.0
        assert all(v == 0.0 for k, v in all_off["groups"][key]["keep_rate"].items() if k.startswith("dec."))
    assert [r["name"] for r in summarize(result)] == [
        "dense",
        "random-decoder-0-seed0",
        "random-decoder-1-seed0",
    ]
    json.dumps(record)  # the record is plain JSON


def test_a_directory_without_a_card_is_not_a_gate_set(tmp_path):
    with pytest.raises(CtxpruneError, match="not a gate set"):
        Candidate.gate_set(tmp_path)


def test_a_gate_set_names_its_seed_and_how_its_training_departs_from_the_plain_recipe(tmp_path):
    plain_set = ARTIFACTS / "gates" / "decoder-flops-0.3-context"  # the plain recipe: rank 16, no run flags
    card = json.loads((plain_set / "card.json").read_text())
    plain = Candidate.gate_set(plain_set)
    assert (plain.seed, plain.variant) == (card["config"]["seed"], "")
    card["config"] |= {"speed_perturb": [0.9, 1.0, 1.1], "start_from": "artifacts/gates/x"}
    card["context"] = [*card["context"], "speaker"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    assert Candidate.gate_set(tmp_path).variant == "speed 0.9,1,1.1; continued; speaker"


@pytest.mark.parametrize(
    ("settings", "variant"),
    [
        ({"lora_rank": 64, "lora_alpha": 64, "hidden_weight": 1.0}, "LoRA rank 64; hidden states 1"),
        ({"budget_per": "task"}, "budget per task"),
        ({"train_every_audio": 4}, "every 4th file"),
        ({"lora_alpha": 8, "lr": 1e-3}, ""),  # no run flag sets these: no variant
    ],
)
def test_a_wider_student_a_task_budget_or_a_subset_of_the_audio_is_another_configuration(
    tmp_path, settings, variant
):
    card = json.loads((ARTIFACTS / "gates" / "decoder-latency-0.3-context" / "card.json").read_text())
    card["config"] |= settings
    (tmp_path / "card.json").write_text(json.dumps(card))
    assert Candidate.gate_set(tmp_path).variant == variant


def test_bench_interleaves_variants_and_reports_medians(tiny_model_dir, tiny_corpus):
    candidates = [Candidate("dense", "dense"), Candidate("dense-again", "dense")]
    spec = StackSpec(str(tiny_model_dir))
    record = bench_latency(
        candidates,
        tiny_corpus,
        spec,
        "test",
        (1, 3),
        batch1_rows=2,
        repeats=3,
        warmup=1,
        options=DecodeOptions(loop_guard=True),
    ).to_json()  # the JSON `ctxprune bench` writes
    assert record["kind"] == "bench" and record["threads"] >= 1 and "torch" in record["versions"]
    assert record["loop_guard"] is True  # decoded as transcribe and serve decode
    assert [(r["name"], r["batch"]) for r in record["results"]] == [
        ("dense", 1),
        ("dense-again", 1),
        ("dense", 3),
        ("dense-again", 3),
    ]
    for r in record["results"]:
        assert r["repeats"] == 3 and r["p25_ms"] <= r["median_ms"] <= r["p75_ms"] and r["tokens"] > 0
    assert record["results"][0]["reduction_vs_dense"] == 0.0


def test_mixed_rows_take_every_group_in_turn(tiny_corpus):
    rows = mixed_rows(read_manifest(tiny_corpus, "test"), 4)  # the tiny corpus: German, both tasks
    assert [(r.task, r.language) for r in rows] == [("transcribe", "de"), ("translate", "de")] * 2
    assert len({(r.audio, r.task) for r in rows}) == 4


@pytest.mark.parametrize(
    ("name", "skips", "decoder_share"),
    [
        ("decoder-flops-0.5-context", (0.3, 0.8), 0.85),
        ("decoder-flops-0.7-context", (0.55, 0.85), 0.5),
        ("decoder-latency-0.5-context", (0.35, 0.65), 0.85),  # its share is of measured time, not FLOPs
    ],
)
def test_shipped_gate_set_on_the_real_model_skips_the_share_it_claims(
    real_whisper, tiny_corpus, name, skips, decoder_share
):
    gate_set = ARTIFACTS / "gates" / name
    record = evaluate_candidates(
        [Candidate("dense", "dense"), Candidate.gate_set(gate_set)],
        tiny_corpus,
        StackSpec(),
        "test",
        limit=1,
        options=DecodeOptions(max_new_tokens=24),
    ).to_json()
    dense, pruned = record["models"]
    for key, d in dense["groups"].items():
        p = pruned["groups"][key]
        assert skips[0] < p["achieved_sparsity"] < skips[1]  # a context set skips more when translating
        assert p["gflops_decoder"] < decoder_share * d["gflops_decoder"]  # the LM head always runs
        assert p["gflops_encoder"] == pytest.approx(d["gflops_encoder"], rel=0.01)
        assert d["capped"] == p["capped"] == 0.0  # both end on end-of-text within 24 tokens here
    assert Path(record["models"][1]["gates"]) == gate_set
    assert pruned["predictor"] == predictor_digest(gate_set) and "predictor" not in dense  # to match benches


def test_a_bench_records_which_predictor_it_timed(real_whisper, tiny_corpus):
    """So that a report does not credit a set replaced under the same name with these times."""
    gate_set = ARTIFACTS / "gates" / "decoder-latency-0.5-context"
    record = bench_latency(
        [Candidate("dense", "dense"), Candidate.gate_set(gate_set)],
        tiny_corpus,
        StackSpec(),
        "test",
        (1,),
        batch1_rows=1,
        repeats=1,
        warmup=0,
        options=DecodeOptions(max_new_tokens=8),
    ).to_json()
    assert record["gate_set_predictors"] == {gate_set.name: predictor_digest(gate_set)}


def test_bench_int8_loads_quantized_models(tiny_model_dir, tiny_corpus, monkeypatch):
    import ctxprune.eval.latency as latency

    asked = []
    original = latency.load_stack
    monkeypatch.setattr(latency, "load_stack", lambda spec: asked.append(spec.int8) or original(spec))
    record = bench_latency(
        [Candidate("dense", "dense")], tiny_corpus, StackSpec(str(tiny_model_dir), int8=True), "test", (1,),
        batch1_rows=1, repeats=1, warmup=0, options=DecodeOptions(max_new_tokens=2),
    )  # fmt: skip
    assert asked == [True] and record.dtype == "int8 (dynamic)"
