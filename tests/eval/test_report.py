"""The report builder on small synthetic eval and bench results whose verdicts are known in advance."""

import json
import re
from pathlib import Path

import pytest

from ctxprune.errors import CtxpruneError
from ctxprune.eval.report import build_report
from tests.eval.synthetic import LAT, bench_row, eval_file, model


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
