"""The issue's targets as the report judges them, on synthetic results whose verdicts are known in advance."""

import re
from pathlib import Path

import pytest

from ctxprune.eval.report import build_report
from ctxprune.paths import ARTIFACTS, predictor_digest
from tests.eval.synthetic import eval_file, model, runtimes_file


def test_missing_unseen_and_bench_are_not_measured(tmp_path):
    models = [
        model("dense", "dense", {"de": 0.1}, {"de": 20.0}),
        model("c", "context", {"de": 0.3}, {"de": 20.0}, 0.5),
    ]
    summary = build_report([eval_file(tmp_path / "e.json", "test", models)], tmp_path / "out")
    targets = {t["name"]: t["met"] for t in summary["targets"]}
    assert targets["wer_rise_at_50_decoder"] is False
    assert targets["gpu_latency_batch1"] is None
    assert targets["context_beats_static_random"] is None
    assert targets["unseen_wer_gap"] is None
    assert targets["quality_whole_model_25"] is None


def test_a_verdict_names_the_other_sets_of_its_kind_that_it_did_not_judge(tmp_path):
    models = [
        model("dense", "dense", {"de": 0.1}, {"de": 20.0}),
        model("first", "context", {"de": 0.1}, {"de": 20.0}, 0.5),
        model("second", "context", {"de": 0.5}, {"de": 10.0}, 0.5),
    ]
    summary = build_report([eval_file(tmp_path / "e.json", "test", models)], tmp_path / "out")
    wer = next(t for t in summary["targets"] if t["name"] == "wer_rise_at_50_decoder")
    assert wer["met"] is True and wer["detail"].startswith("first vs dense")
    assert wer["detail"].endswith("(1 more set(s) of this kind in the files, not judged: second)")


def gpu_verdict(tmp_path: Path, evals: Path, bench: Path) -> dict:
    summary = build_report([evals, bench], tmp_path / bench.stem)
    return next(t for t in summary["targets"] if t["name"] == "gpu_latency_batch1")


def test_the_gpu_target_reads_a_shipped_latency_set_that_the_bench_names_by_its_shipped_name(tmp_path):
    """Eval files name the run a set was trained as; bench/runtimes.py names the shipped copy. The
    shipped card says what the set is, so the verdict still comes; an unknown name is not guessed at, and
    a bench that timed another set under the shipped name (before it was replaced) is not credited."""
    models = [
        model("dense", "dense", {"de": 0.1}, {"de": 20.0}),
        model("decoder-latency-0.5-context-seed0", "context", {"de": 0.1}, {"de": 20.0}, 0.5, by="latency"),
    ]
    evals = eval_file(tmp_path / "e.json", "test", models)
    shipped, digest = (
        "decoder-latency-0.5-context",
        predictor_digest(ARTIFACTS / "gates" / "decoder-latency-0.5-context"),
    )

    target = gpu_verdict(tmp_path, evals, runtimes_file(tmp_path, shipped, digest))
    assert target["met"] is False and f"{shipped} 5.00 ms" in target["detail"]
    assert "30.6% faster" in target["detail"]
    assert gpu_verdict(tmp_path, evals, runtimes_file(tmp_path, "some-other-set", digest))["met"] is None
    assert gpu_verdict(tmp_path, evals, runtimes_file(tmp_path, shipped, "0" * 64))["met"] is None  # replaced
    assert gpu_verdict(tmp_path, evals, runtimes_file(tmp_path, shipped, None))["met"] is None  # no digest


def test_the_gpu_target_matches_the_timed_set_by_its_predictor_where_both_files_record_it(tmp_path):
    run = model("run-seed0", "context", {"de": 0.1}, {"de": 20.0}, 0.5, by="latency", predictor="a" * 64)
    evals = eval_file(tmp_path / "e.json", "test", [model("dense", "dense", {"de": 0.1}, {"de": 20.0}), run])
    target = gpu_verdict(tmp_path, evals, runtimes_file(tmp_path, "any-name", "a" * 64))
    assert target["met"] is False and "any-name 5.00 ms" in target["detail"]
    # the same name, another predictor: not the set that was judged
    assert gpu_verdict(tmp_path, evals, runtimes_file(tmp_path, "run-seed0", "b" * 64))["met"] is None


def test_an_encoder_set_that_skips_too_little_misses_the_whole_model_target(tmp_path):
    models = [
        model("dense", "dense", {"de": 0.1}, {"de": 20.0}),
        model("both-0.2", "context", {"de": 0.1}, {"de": 20.0}, 0.2, where="both"),  # no loss, 20% skipped
    ]
    summary = build_report([eval_file(tmp_path / "e.json", "test", models)], tmp_path / "out")
    target = next(t for t in summary["targets"] if t["name"] == "quality_whole_model_25")
    assert target["met"] is False and "skips 20.0%" in target["detail"]


def test_the_whole_model_share_is_measured_and_counts_what_the_loop_guard_ran_again(tmp_path):
    """A set whose masks skip 30% but whose executed GFLOPs (second decodings included) are only 20%
    under dense's is judged on the 20%."""
    both = model("both-0.3", "context", {"de": 0.1}, {"de": 20.0}, 0.3, where="both")
    for g in both["groups"].values():
        g["gflops_encoder"], g["gflops_decoder"] = 32.0, 3.2  # 44 GFLOPs dense: 20% skipped
    models = [model("dense", "dense", {"de": 0.1}, {"de": 20.0}), both]
    summary = build_report([eval_file(tmp_path / "e.json", "test", models)], tmp_path / "out")
    target = next(t for t in summary["targets"] if t["name"] == "quality_whole_model_25")
    assert target["met"] is False and "skips 20.0%" in target["detail"]


def test_context_wins_over_three_seeds_each_and_shows_their_range(tmp_path):
    def seeds(kind, wers, bleu):
        return [model(f"{kind}-{i}", kind, {"de": w}, {"de": bleu + i}, 0.5, i) for i, w in enumerate(wers)]

    models = [model("dense", "dense", {"de": 0.1}, {"de": 25.0}), *seeds("context", [0.20, 0.22, 0.21], 20.0)]
    summary = build_report(
        [eval_file(tmp_path / "e.json", "test", models + seeds("static", [0.25, 0.30, 0.26], 18.0))],
        tmp_path / "o",
    )
    target = next(t for t in summary["targets"] if t["name"] == "context_beats_static_random")
    assert target["met"] is True
    assert "context WER 0.210 [0.200-0.220, 3 seed(s)]" in target["detail"]
    assert "static 0.270 [0.250-0.300, 3 seed(s)]" in target["detail"] and "transcribe" in target["detail"]


@pytest.mark.parametrize(
    ("context_skips", "counted"),
    [(0.47, False), (0.49, True), (0.60, True)],  # static skips 0.5: 0.03 less is unequal, 0.01 less equal
)
def test_a_win_counts_only_at_equal_compute_or_with_context_skipping_more(tmp_path, context_skips, counted):
    def seeds(kind, wer, bleu, skipped):
        return [
            model(f"{kind}-{i}", kind, {"de": wer}, {"de": bleu}, 0.5, i, skipped=skipped) for i in range(3)
        ]

    models = [model("dense", "dense", {"de": 0.1}, {"de": 25.0})]
    models += seeds("context", 0.2, 22.0, context_skips) + seeds("static", 0.3, 20.0, 0.5)
    summary = build_report([eval_file(tmp_path / "e.json", "test", models)], tmp_path / "o")
    target = next(t for t in summary["targets"] if t["name"] == "context_beats_static_random")
    assert target["met"] is counted
    assert f"achieved sparsity {context_skips:.3f} vs 0.500" in target["detail"]
    assert ("not at equal compute" in target["detail"]) is not counted


def test_sets_trained_another_way_are_not_counted_as_seeds_of_the_plain_recipe(tmp_path):
    def seeds(kind, wer, variant=None):
        return [
            model(f"{kind}-{variant}-{i}", kind, {"de": wer}, {"de": 20.0}, 0.5, i, variant=variant)
            for i in range(3)
        ]

    models = [
        model("dense", "dense", {"de": 0.1}, {"de": 25.0}),
        *seeds("context", 0.2),
        *seeds("static", 0.25),
    ]
    models += seeds("context", 0.9, "speed 0.9,1,1.1")  # much worse: in the plain config they would lose it
    summary = build_report([eval_file(tmp_path / "e.json", "test", models)], tmp_path / "o")
    target = next(t for t in summary["targets"] if t["name"] == "context_beats_static_random")
    assert "decoder/flops/0.5 transcribe: context WER 0.200 [0.200-0.200, 3 seed(s)]" in target["detail"]
    assert "speed" not in target["detail"]  # no static set was trained with speed perturbation


def with_rows(m: dict, errors: list[int]) -> dict:
    """The model with row statistics on its transcribe groups: 10 rows of 10 words, `errors` per row."""
    for key, g in m["groups"].items():
        if key.startswith("transcribe/"):
            g |= {"rows_digest": key, "row_stats": {"errors": errors, "words": [10] * 10}}
    return m


def test_a_verdict_shows_its_bootstrap_interval_where_the_records_hold_row_statistics(tmp_path):
    dense_rows, set_rows = [2] * 10, [2, 2, 2, 2, 2, 3, 3, 3, 3, 3]  # WER 0.20 and 0.25
    files = [
        eval_file(
            tmp_path / f"{split}.json",
            split,
            [
                with_rows(model("dense", "dense", {"de": 0.20}, {}), dense_rows),
                with_rows(model("c", "context", {"de": 0.25}, {}, 0.5), set_rows),
            ],
        )
        for split in ("test", "test_unseen_voice")
    ]
    summary = build_report(files, tmp_path / "out")
    targets = {t["name"]: t for t in summary["targets"]}
    low, high = summary["models"]["test"]["c"]["wer_rise_interval"]["de"]  # in points, as the table
    assert 0 < low < 5.0 < high
    assert summary["models"]["test"]["c"]["bleu_drop_interval"] == {}  # no translate rows here
    assert f"+5.0 [{low:+.1f}, {high:+.1f}]" in (tmp_path / "out" / "report.md").read_text()
    wer = targets["wer_rise_at_50_decoder"]["detail"]
    low, high = map(float, re.search(r"95% interval over rows \[([-+.\d]+), ([-+.\d]+)\]", wer).groups())
    assert 0 < low < 0.05 < high  # the rise, 0.05, inside an interval that excludes no rise
    gap = targets["unseen_wer_gap"]["detail"]
    low, high = map(float, re.search(r"95% interval over rows \[([-+.\d]+), ([-+.\d]+)\]", gap).groups())
    assert low < 0 < high  # the same rise on both splits: no gap, within noise
    assert re.search(r"pooled over every language's words [-+]0\.000 \(95% interval over rows", gap)
    gaps = summary["unseen_gaps"]["test_unseen_voice"]["c"]
    assert gaps["gap_points"]["de"] == pytest.approx(0.0)
    assert [round(x / 100, 3) for x in gaps["gap_interval"]["de"]] == [
        low,
        high,
    ]  # points, the detail's fraction
    # one language: pooled over languages is that language's gap, on the same rows and resamples
    assert gaps["pooled_gap_points"] == pytest.approx(0.0)
    assert gaps["pooled_gap_interval"] == pytest.approx(gaps["gap_interval"]["de"])
    assert "| model | de | all languages |" in (tmp_path / "out" / "report.md").read_text()
