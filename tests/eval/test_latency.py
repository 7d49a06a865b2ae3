"""eval/latency.py: which rows are timed, in which order the variants run, and what the reduction is
measured against. Fake variants and a fake clock make the order and the recorded times exact."""

from types import SimpleNamespace

import pytest

import ctxprune.eval.latency as latency
from ctxprune.data.manifest import Example
from ctxprune.eval.latency import bench_latency, interleaved, mixed_rows
from ctxprune.eval.suite import Candidate
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.stack import StackSpec


def example(task: str, language: str, i: int) -> Example:
    return Example(f"{task}-{language}-{i}", f"{i}.flac", 1.0, language, task, "t", "e", "m1", i)


def test_mixed_rows_go_round_robin_over_sorted_groups_until_n():
    rows = [example("translate", "de", i) for i in range(3)]
    rows += [example("transcribe", "fr", i) for i in range(1)]
    rows += [example("transcribe", "de", i) for i in range(2)]
    picked = mixed_rows(rows, 5)
    assert [e.id for e in picked] == [
        "transcribe-de-0",
        "transcribe-fr-0",
        "translate-de-0",
        "transcribe-de-1",
        "translate-de-1",
    ]
    assert [e.id for e in mixed_rows(rows, 100)][5:] == ["translate-de-2"]  # all rows, none twice


class FakeClock:
    """perf_counter that only moves when a variant runs: each call of variant v in round r takes
    (10 * r + v) ms, so every recorded time names its round and variant."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_interleaved_rotates_the_order_and_drops_the_warmup_rounds(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    calls: list[str] = []
    names = ["a", "b", "c"]

    def variant(name: str):
        def run() -> str:
            round_ = len(calls) // len(names)
            clock.now += (10 * round_ + names.index(name)) / 1000
            calls.append(name)
            return f"{name}{round_}"

        return run

    steps = []
    times, outputs = interleaved(
        {n: variant(n) for n in names}, repeats=3, warmup=2, device="cpu", on_step=lambda: steps.append(1)
    )
    assert calls == list("abcbcacababcbca")  # each round starts one later
    assert len(steps) == 15
    for i, name in enumerate(names):  # rounds 2, 3 and 4 are kept, rounds 0 and 1 are warm-up
        assert times[name] == pytest.approx([20 + i, 30 + i, 40 + i])
    assert outputs == {"a": "a4", "b": "b4", "c": "c4"}


def test_interleaved_without_warmup_keeps_every_round(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=clock.perf_counter))

    def run() -> None:
        clock.now += 0.005

    times, _ = interleaved({"only": run}, repeats=2, warmup=0, device="cpu")
    assert times == {"only": pytest.approx([5.0, 5.0])}


def test_reduction_is_measured_against_the_dense_candidate_wherever_it_stands(tiny_model_dir, tiny_corpus):
    candidates = [Candidate("static-first", "static"), Candidate("dense", "dense")]
    record = bench_latency(
        candidates, tiny_corpus, StackSpec(str(tiny_model_dir)), "test", (1,), batch1_rows=1, repeats=3,
        warmup=0, options=DecodeOptions(max_new_tokens=2),
    )  # fmt: skip
    first, dense = record.results
    assert record.reference == "dense" and dense.name == "dense"
    assert dense.reduction_vs_dense == 0.0
    assert first.reduction_vs_dense == pytest.approx(1 - first.median_ms / dense.median_ms, abs=0, rel=1e-12)


def test_without_a_dense_candidate_there_is_no_reduction(tiny_model_dir, tiny_corpus):
    record = bench_latency(
        [Candidate("static", "static")], tiny_corpus, StackSpec(str(tiny_model_dir)), "test", (1,),
        batch1_rows=1, repeats=1, warmup=0, options=DecodeOptions(max_new_tokens=2),
    )  # fmt: skip
    assert record.reference is None
    assert [r.reduction_vs_dense for r in record.results] == [None]
    assert record.to_json()["results"][0]["reduction_vs_dense"] is None
