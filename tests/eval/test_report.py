"""The report builder on small synthetic eval and bench results whose verdicts are known in advance."""

import json
import re
from pathlib import Path

import pytest

from ctxprune.errors import CtxpruneError
from ctxprune.eval.report import build_report
from ctxprune.paths import ARTIFACTS, predictor_digest

LAT = "ctx-lat-0.5"
GATES = [f"enc.{i}.{m}" for i in range(2) for m in ("attn", "ffn")] + [
    f"dec.{i}.{m}" for i in range(2) for m in ("self_attn", "cross_attn", "ffn")
]


def group(quality: dict, gflops_decoder: float, keep: float, where: str = "decoder") -> dict:
    return {
        **quality,
        "n": 10,
        "gflops_encoder": 40.0 * (keep if where == "both" else 1.0),
        "gflops_decoder": gflops_decoder,
        "achieved_sparsity": 1 - keep,
        "sparsity_flops": 1 - keep,
        "sparsity_count": 1 - keep,
        "keep_rate": {g: (keep if g.startswith("dec") else 1.0) for g in GATES},
    }


def model(
    name,
    kind,
    wer,
    bleu,
    target=None,
    seed=None,
    where="decoder",
    by="flops",
    variant=None,
    skipped=None,
    predictor=None,
) -> dict:
    """`wer` and `bleu` are per language: {"de": ..., "fr": ...}; `target` is also the skipped share
    unless `skipped` says otherwise."""
    keep = 1.0 if target is None else 1 - (target if skipped is None else skipped)
    groups = {
        f"transcribe/{k}": group({"wer": v, "cer": v / 2}, 4 * keep, keep, where) for k, v in wer.items()
    }
    groups |= {
        f"translate/{k}": group({"bleu": v, "chrf": 2 * v}, 4 * keep, keep, where) for k, v in bleu.items()
    }
    return {
        "name": name,
        "kind": kind,
        "where": None if kind == "dense" else where,
        "sparsity_by": None if kind == "dense" else by,
        "target_sparsity": target,
        "seed": seed,
        "variant": variant,
        **({"predictor": predictor} if predictor else {}),
        "groups": groups,
    }


def eval_file(path: Path, split: str, models: list[dict]) -> Path:
    meta = {
        "data": "/corpus",
        "device": "cpu",
        "torch": "2.13.0",
        "normalizer": "whisper",
        "bleu_signature": "x",
    }
    path.write_text(json.dumps({"kind": "eval", "split": split, **meta, "models": models}))
    return path


def bench_row(name: str, ms: float) -> dict:
    return {"name": name, "batch": 1, "median_ms": ms, "p25_ms": ms - 2, "p75_ms": ms + 3, "min_ms": ms - 4,
            "max_ms": ms + 5, "repeats": 5, "tokens": 30, "tokens_per_s": 30_000 / ms,
            "reduction_vs_dense": 1 - ms / 100}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("report")
    ctx = "ctx-dec-0.5"
    test = [
        model("dense", "dense", {"de": 0.170, "fr": 0.200}, {"de": 26.0, "fr": 30.0}),
        # WER rises by at most 0.009 (met); BLEU drops 1.5 on de (not met).
        model(ctx, "context", {"de": 0.178, "fr": 0.209}, {"de": 24.5, "fr": 29.8}, 0.5),
        model("static-0.5", "static", {"de": 0.200, "fr": 0.230}, {"de": 22.0, "fr": 27.0}, 0.5),
        model("random-0.5-s0", "random", {"de": 0.400, "fr": 0.450}, {"de": 10.0, "fr": 12.0}, 0.5, 0),
        model("random-0.5-s1", "random", {"de": 0.420, "fr": 0.430}, {"de": 11.0, "fr": 13.0}, 0.5, 1),
        # within 1 point on both tasks (met)
        model(LAT, "context", {"de": 0.175, "fr": 0.205}, {"de": 25.5, "fr": 29.9}, 0.5, by="latency"),
        # 30% of the whole model skipped, WER +0.015 and BLEU -1.5 at worst: within 2 points (met)
        model("both-0.3", "context", {"de": 0.185, "fr": 0.210}, {"de": 24.5, "fr": 30.0}, 0.3, where="both"),
    ]
    unseen = [
        model("dense", "dense", {"de": 0.250, "fr": 0.300}, {"de": 20.0, "fr": 25.0}),
        # Rise on de: 0.020 here vs 0.008 on test, a gap of 0.012 > 0.005 (not met).
        model(ctx, "context", {"de": 0.270, "fr": 0.311}, {"de": 19.5, "fr": 24.9}, 0.5),
        model("static-0.5", "static", {"de": 0.280, "fr": 0.330}, {"de": 18.0, "fr": 23.0}, 0.5),
    ]
    bench = tmp / "bench.json"
    bench.write_text(
        json.dumps(
            {
                "kind": "bench",
                "device": "cuda",
                "device_name": "Test GPU",
                "threads": 2,
                "versions": {},
                "results": [bench_row("dense", 100.0), bench_row(LAT, 62.0), bench_row(ctx, 80.0)],
            }
        )
    )
    files = [
        eval_file(tmp / "test.json", "test", test),
        eval_file(tmp / "unseen.json", "unseen", unseen),
        bench,
    ]
    out = tmp / "out"
    return out, build_report(files, out, title="synthetic")


def test_html_is_self_contained(built):
    out, summary = built
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page)
    assert "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") >= 3
    for heading in ("Targets", "What it saves, what it costs", "Beside the paper", "Latency"):
        assert heading in page
    assert str(out / "report.html") in summary["files"]


def test_markdown_references_existing_pngs(built):
    out, _ = built
    md = (out / "report.md").read_text()
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(pngs) >= 3
    assert all((out / p).is_file() for p in pngs)
    assert "1.0 absolute WER point = 0.01" in md


def test_costs_are_shown_per_language_and_the_unseen_gap_per_set(built):
    out, _ = built
    md = (out / "report.md").read_text()
    # ctx-dec-0.5 on test: WER de 0.170 -> 0.178, fr 0.200 -> 0.209; BLEU de 26.0 -> 24.5, fr 30.0 -> 29.8
    assert "| ctx-dec-0.5 | +0.8 | +0.9 |" in md and "| ctx-dec-0.5 | +1.5 | +0.2 |" in md
    # unseen: de rise 2.0 points against 0.8 on test, fr 1.1 against 0.9
    gaps = md.split("Unseen voices: WER rise on unseen minus on test, points")[1].split("\n#")[0]
    assert "| ctx-dec-0.5 | +1.2 | +0.2 |" in gaps
    static = next(line for line in gaps.splitlines() if line.startswith("| static-0.5 |"))
    assert [abs(float(x)) for x in static.split("|")[2:4]] == [0.0, 0.0]  # 3.0 points on both splits


def test_the_summary_gives_each_set_its_savings_and_costs_against_dense(built):
    _, summary = built
    figures = summary["models"]["test"]["ctx-dec-0.5"]
    # decoder 4 -> 2 GFLOPs per utterance, encoder 40 on both: half the decoder, 2 of 44 of the whole
    assert figures["decoder_flops_skipped"] == pytest.approx(0.5)
    assert figures["whole_model_flops_skipped"] == pytest.approx(2 / 44)
    assert figures["wer_rise_points"] == {"de": pytest.approx(0.8), "fr": pytest.approx(0.9)}
    assert figures["bleu_drop"] == {"de": pytest.approx(1.5), "fr": pytest.approx(0.2)}
    assert "dense" not in summary["models"]["test"] and set(summary["models"]) == {"test", "unseen"}


def test_a_rebuilt_report_leaves_no_plot_of_the_earlier_one(built):
    out, summary = built
    (out / "keep_test_context_00_gone.png").write_bytes(b"old")
    (out / "notes.png").write_bytes(b"the user's")
    files = sorted(out.parent.glob("*.json"))
    again = build_report(files, out, title="synthetic")
    assert not (out / "keep_test_context_00_gone.png").exists() and (out / "notes.png").exists()
    written = [Path(f).name for f in again["files"] if f.endswith(".png")]
    assert sorted(p.name for p in out.glob("*.png")) == sorted([*written, "notes.png"])


def test_targets_verdicts(built):
    out, summary = built
    targets = {t["name"]: t for t in summary["targets"]}
    assert {n: t["met"] for n, t in targets.items()} == {
        "wer_rise_at_50_decoder": True,
        "bleu_drop_at_50_decoder": False,
        "quality_decoder_latency_0.5": True,
        "quality_decoder_flops_0.7": None,  # no such set
        "quality_decoder_latency_0.7": None,
        "quality_whole_model_25": True,
        "gpu_latency_batch1": True,  # the latency-weighted set, not the FLOP-weighted one (80 ms)
        "context_beats_static_random": False,  # better means, but one seed each: not counted
        "unseen_wer_gap": False,
    }
    assert "not conclusive, fewer than 3 seeds" in targets["context_beats_static_random"]["detail"]
    assert "worst language de" in targets["bleu_drop_at_50_decoder"]["detail"]
    assert (
        "38.0%" in targets["gpu_latency_batch1"]["detail"] and LAT in targets["gpu_latency_batch1"]["detail"]
    )
    assert "both-0.3 skips 30.0%" in targets["quality_whole_model_25"]["detail"]
    assert "worst language de" in targets["unseen_wer_gap"]["detail"]
    assert json.loads((out / "summary.json").read_text())["targets"] == summary["targets"]


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


def runtimes_file(tmp_path: Path, set_name: str, digest: str | None) -> Path:
    """A bench/runtimes.py file that timed dense at 7.2 ms and `set_name` at 5.0 (30.6% faster), with the
    set's predictor digest where `digest` is given (files before the eighteenth step have none)."""
    timing = {"p25_ms": 0, "p75_ms": 0, "repeats": 5, "tokens": 90}
    results = {
        "ours-dense-graphs": {**timing, "median_ms": 7.2},
        f"ours-{set_name}": {**timing, "median_ms": 5.0},
    }
    record = {"kind": "bench-runtimes", "device": "H100", "natural_batch1": {"results": results}}
    if digest is not None:
        record["gate_set_predictors"] = {set_name: digest}
    path = tmp_path / f"{set_name}-{digest}.json"
    path.write_text(json.dumps(record))
    return path


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


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON"),
        ('{"kind": "other"}', "expected"),
        ('{"kind": "bench", "results": []}', "no eval result"),
    ],
)
def test_bad_input(tmp_path, content, message):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CtxpruneError, match=message):
        build_report([path], tmp_path / "out")


def test_an_evaluation_in_parts_reports_like_one_file(tmp_path):
    models = [
        model("dense", "dense", {"de": 0.10}, {"de": 20.0}),
        model("c", "context", {"de": 0.30}, {"de": 20.0}, 0.5),
        model("s", "static", {"de": 0.35}, {"de": 18.0}, 0.5),
    ]
    whole = build_report([eval_file(tmp_path / "e.json", "test", models)], tmp_path / "whole")
    parts = [
        eval_file(tmp_path / "p1.json", "test", models[:1]),
        eval_file(tmp_path / "p2.json", "test", models[1:]),
    ]
    assert build_report(parts, tmp_path / "parts")["targets"] == whole["targets"]
    with pytest.raises(CtxpruneError, match="appears in two eval files"):
        build_report([parts[0], eval_file(tmp_path / "p3.json", "test", models)], tmp_path / "twice")


def _only(models: list[dict], language: str) -> list[dict]:
    return [{**m, "groups": {k: g for k, g in m["groups"].items() if k.endswith(language)}} for m in models]


def test_an_evaluation_split_by_group_and_candidate_reports_like_one_file(tmp_path):
    models = [
        model("dense", "dense", {"de": 0.10, "fr": 0.2}, {"de": 20.0, "fr": 25.0}),
        model("c", "context", {"de": 0.30, "fr": 0.2}, {"de": 20.0, "fr": 24.0}, 0.5),
    ]
    whole = build_report([eval_file(tmp_path / "e.json", "test", models)], tmp_path / "whole")
    de, fr = _only(models, "de"), _only(models, "fr")
    parts = [
        eval_file(tmp_path / "p1.json", "test", de),
        eval_file(tmp_path / "p2.json", "test", fr[:1]),
        eval_file(tmp_path / "p3.json", "test", fr[1:]),
    ]
    summary = build_report(parts, tmp_path / "parts")
    assert summary["targets"] == whole["targets"]
    assert summary["models"] == whole["models"]


def test_parts_that_decoded_other_rows_of_a_group_are_refused(tmp_path):
    dense = model("dense", "dense", {"de": 0.10}, {"de": 20.0})
    ctx = model("c", "context", {"de": 0.30}, {"de": 20.0}, 0.5)
    ctx["groups"]["transcribe/de"]["n"] = 5  # a part run with --limit 5
    parts = [eval_file(tmp_path / "p1.json", "test", [dense]), eval_file(tmp_path / "p2.json", "test", [ctx])]
    with pytest.raises(CtxpruneError, match="different rows of transcribe/de"):
        build_report(parts, tmp_path / "out")
    ctx["groups"]["transcribe/de"] |= {"n": 10, "rows_digest": "b"}
    dense["groups"]["transcribe/de"]["rows_digest"] = "a"
    parts = [eval_file(tmp_path / "p3.json", "test", [dense]), eval_file(tmp_path / "p4.json", "test", [ctx])]
    with pytest.raises(CtxpruneError, match="different rows of transcribe/de"):
        build_report(parts, tmp_path / "out2")


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
    gaps = summary["unseen_gaps"]["test_unseen_voice"]["c"]
    assert gaps["gap_points"]["de"] == pytest.approx(0.0)
    assert [round(x / 100, 3) for x in gaps["gap_interval"]["de"]] == [
        low,
        high,
    ]  # points, the detail's fraction
