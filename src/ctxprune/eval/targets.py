"""The issue's success criteria, judged on eval and bench records: MET, NOT MET, or not measured (None),
each with the numbers behind the verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ctxprune.eval.measures import (
    PRIMARY,
    achieved_sparsity,
    by_config,
    context_models,
    mean,
    num,
    paper_models,
    per_language_delta,
    reduction,
    seed_mean,
    skipped_share,
    split_pairs,
    task_means,
)
from ctxprune.eval.records import BenchRecord, BenchResult, CandidateResult, EvalRecord
from ctxprune.eval.significance import cost_interval, gap_interval, pooled_gap
from ctxprune.models.whisper_tokens import TASKS
from ctxprune.paths import ARTIFACTS, card_predictor

EPS = 1e-9  # so that 0.18 - 0.17 counts as a rise of exactly 0.01
# The other quality targets: (name, sparsity_by, decoder target, the WER points and BLEU allowed).
DECODER_TARGETS = [
    ("quality_decoder_latency_0.5", "latency", 0.5, 1.0),
    ("quality_decoder_flops_0.7", "flops", 0.7, 3.0),
    ("quality_decoder_latency_0.7", "latency", 0.7, 3.0),
]
# the card of a shipped set that the GPU latency target is about (bench files name sets as shipped)
SHIPPED_LATENCY_SET = {
    "kind": "context",
    "where": "decoder",
    "sparsity_by": "latency",
    "target_sparsity": 0.5,
}
WHOLE_MODEL = 0.25  # share of whole-model FLOPs an encoder+decoder set must skip, within 2 points


def judge_targets(
    splits: dict[str, EvalRecord], main: str, benches: list[tuple[Path, BenchRecord]]
) -> list[dict]:
    """[{"name", "met", "detail"}, ...] for every target, judged on split `main` (and the unseen one)."""
    models = splits[main].models
    dense, chosen = splits[main].dense(), next(iter(paper_models(models)), None)
    unseen = next((s for s in splits if "unseen" in s), None)
    latency = _context_model(models, "latency", 0.5)
    targets = [
        _target_quality("wer_rise_at_50_decoder", "transcribe", main, dense, chosen),
        _target_quality("bleu_drop_at_50_decoder", "translate", main, dense, chosen),
        *(
            _target_both_tasks(name, main, dense, _context_model(models, by, target), points)
            for name, by, target, points in DECODER_TARGETS
        ),
        _target_whole_model(main, dense, models),
        _target_latency(latency, benches),
        _target_baselines(main, models),
        _target_unseen(splits, main, unseen, dense, chosen),
    ]
    judged = {"wer_rise_at_50_decoder": ("flops", 0.5), "bleu_drop_at_50_decoder": ("flops", 0.5)}
    judged |= {name: (by, target) for name, by, target, _ in DECODER_TARGETS}
    for t in targets:
        if t["name"] in judged:
            _name_the_unjudged(t, models, *judged[t["name"]])
    return targets


def _context_model(models: list[CandidateResult], by: str, target: float) -> CandidateResult | None:
    """The first context-aware decoder set of this weighting and target (the paper's choice of seed)."""
    return next(iter(context_models(models, by, target)), None)


def _name_the_unjudged(target: dict, models: list[CandidateResult], by: str, sparsity: float) -> None:
    """Name the other sets of the judged kind in the files: the verdict is the first one's, and which
    comes first is the order of the files given."""
    others = [m.name for m in context_models(models, by, sparsity)[1:]]
    if others:
        target["detail"] += (
            f" ({len(others)} more set(s) of this kind in the files, not judged: {', '.join(others)})"
        )


def _target(name: str, met: bool | None, detail: str) -> dict:
    return {"name": name, "met": met, "detail": detail}


def _missing(split: str) -> str:
    return f"not measured: split {split!r} lacks a dense model or a context/decoder/flops/0.5 model"


def _target_quality(
    name: str,
    task: str,
    split: str,
    dense: CandidateResult | None,
    model: CandidateResult | None,
    points: float = 1.0,
) -> dict:
    """WER may rise by `points` WER points (0.01 each, WER being a fraction) and BLEU may drop by `points`,
    per language."""
    if dense is None or model is None:
        return _target(name, None, _missing(split))
    pairs = per_language_delta(model, dense, task)
    if not pairs:
        return _target(name, None, f"not measured: no {task} groups shared by dense and {model.name}")
    if task == "transcribe":
        losses = {lang: m - d for lang, (d, m) in pairs.items()}
        limit, what = points / 100, "WER rise"
        note = f"limit +{limit:.3f} per language (WER is a fraction here: 1.0 absolute WER point = 0.01)"
        show = ", ".join(f"{lang} {d:.3f}→{m:.3f} ({m - d:+.3f})" for lang, (d, m) in sorted(pairs.items()))
    else:
        losses = {lang: d - m for lang, (d, m) in pairs.items()}
        limit, what = points, "BLEU drop"
        note = f"limit {limit:.1f} BLEU per language"
        show = ", ".join(f"{lang} {d:.1f}→{m:.1f} ({m - d:+.1f})" for lang, (d, m) in sorted(pairs.items()))
    worst, loss = max(losses.items(), key=lambda kv: kv[1])
    interval = cost_interval(model.task_groups(task)[worst], dense.task_groups(task)[worst], task)
    scale = 100 if task == "transcribe" else 1  # the interval is in WER points; the figure a fraction
    detail = (
        f"{model.name} vs dense on split {split!r}: worst language {worst}, {what} {loss:.3f}"
        f"{_shown(interval, scale)}; {note}. Per language: {show}"
    )
    return _target(name, loss <= limit + EPS, detail)


def _shown(interval: tuple[float, float] | None, scale: float) -> str:
    """A bootstrap interval beside its figure, where the records hold row statistics."""
    if interval is None:
        return ""
    return f" (95% interval over rows [{interval[0] / scale:+.3f}, {interval[1] / scale:+.3f}])"


def _target_both_tasks(
    name: str, split: str, dense: CandidateResult | None, model: CandidateResult | None, points: float
) -> dict:
    """Both tasks within `points` of dense in every language: the transcription and translation verdicts
    joined (not measured when either is)."""
    if model is None:
        return _target(
            name, None, f"not measured: split {split!r} has no {name.removeprefix('quality_')} set"
        )
    verdicts = [_target_quality(name, task, split, dense, model, points) for task in TASKS]
    met = [v["met"] for v in verdicts]
    return _target(name, None if None in met else all(met), " | ".join(v["detail"] for v in verdicts))


def _target_whole_model(split: str, dense: CandidateResult | None, models: list[CandidateResult]) -> dict:
    """An encoder+decoder set skips at least `WHOLE_MODEL` of the model's FLOPs within 2 points of dense;
    of several, the one that skips the most is judged."""
    name = "quality_whole_model_25"
    sets = [m for m in models if m.where == "both" and m.kind in ("context", "static")]
    if not sets:
        return _target(name, None, f"not measured: split {split!r} has no encoder+decoder set")
    model = max(sets, key=lambda m: skipped_share(m, dense))
    skipped = skipped_share(model, dense)
    quality = _target_both_tasks(name, split, dense, model, 2.0)
    met = quality["met"]
    if met is not None and skipped < WHOLE_MODEL - EPS:
        met = False  # within quality, but too little skipped
    detail = (
        f"{model.name} skips {skipped:.1%} of whole-model FLOPs (need {WHOLE_MODEL:.0%}); {quality['detail']}"
    )
    return _target(name, met, detail)


def _shipped_latency_set(name: str, bench: BenchRecord) -> bool:
    """Whether the bench timed, as `name`, the shipped context-aware decoder set by latency at 0.5 (its
    card says so): bench files name shipped sets, eval files name the runs they were copied from. The
    bench must record the shipped predictor's digest, so that a set replaced under its name is not
    credited with its predecessor's times."""
    card = ARTIFACTS / "gates" / name / "card.json"
    if not card.is_file():
        return False
    c = json.loads(card.read_text())
    timed = (bench.gate_set_predictors or {}).get(name)
    shipped = all(c.get(k) == v for k, v in SHIPPED_LATENCY_SET.items())
    return shipped and timed is not None and timed == card_predictor(c)


def _timed_row(
    rows: list[BenchResult], bench: BenchRecord, model: CandidateResult | None
) -> BenchResult | None:
    """The bench row that timed the judged set: by predictor digest where both files record one; else by
    name, else the shipped set of that kind (bench/runtimes.py names shipped copies of runs)."""
    timed = bench.gate_set_predictors or {}
    if model is not None and model.predictor and timed:
        return next((r for r in rows if timed.get(r.name) == model.predictor), None)
    by_name = next((r for r in rows if model is not None and r.name == model.name), None)
    return by_name or next((r for r in rows if _shipped_latency_set(r.name, bench)), None)


def _target_latency(model: CandidateResult | None, benches: list[tuple[Path, BenchRecord]]) -> dict:
    """GPU decoding at batch 1 (natural length) of the latency-weighted decoder 0.5 set at least 35% faster
    than dense: the evaluated set where a bench file names it, else a shipped set of that kind."""
    name = "gpu_latency_batch1"
    for path, bench in benches:
        if bench.device != "cuda":
            continue
        rows = [r for r in bench.results if r.batch == 1]
        dense = next((r for r in rows if r.name == "dense"), None)
        row = _timed_row(rows, bench, model)
        if row and dense:
            red = reduction(bench.results, row)
            detail = (
                f"{row.name} {num(row.median_ms):.2f} ms vs dense {num(dense.median_ms):.2f} ms "
                f"median at batch 1 on {bench.device_name or 'cuda'} ({path.name}): "
                f"{red:.1%} faster; need at least 35.0%"
            )
            return _target(name, red >= 0.35 - EPS, detail)
    wanted = repr(model.name) if model is not None else "a context/decoder/latency/0.5 set"
    return _target(name, None, f"not measured: no cuda bench file with {wanted} and dense at batch 1")


MIN_SEEDS = 3  # a win over fewer seeds per side is not counted: seeds of one config differ by more
EQUAL_COMPUTE = 0.02  # a win counts where context skips at least the rival's share minus this


def _spread(models: list[CandidateResult], task: str, metric: str, spec: str) -> str:
    """The seeds' range of a config's task mean, and how many there are."""
    values = [task_means(m, task)[metric] for m in models]
    return f"[{min(values):{spec}}-{max(values):{spec}}, {len(values)} seed(s)]"


def _compute_verdict(ctx: list[CandidateResult], rivals: list[CandidateResult]) -> tuple[bool, str]:
    """Whether the two sides ran at equal achieved compute (within `EQUAL_COMPUTE`, or context at less),
    and the sparsities behind it."""
    cs = mean([achieved_sparsity(m) for m in ctx])
    rs = mean([achieved_sparsity(m) for m in rivals])
    if math.isnan(cs) or math.isnan(rs):
        return False, "achieved sparsity not measured"
    return cs >= rs - EQUAL_COMPUTE - EPS, f"achieved sparsity {cs:.3f} vs {rs:.3f}"


def _target_baselines(split: str, models: list[CandidateResult]) -> dict:
    """Context-aware gating beats static and random gating of the same target on mean quality over at
    least `MIN_SEEDS` seeds each, at equal achieved compute (within `EQUAL_COMPUTE`; a context side that
    skips more is not held back); the seeds' range is shown beside each mean."""
    name = "context_beats_static_random"
    configs = by_config(models)
    lines, wins = [], []
    for (kind, where, by, target, variant), ctx in configs.items():
        if kind != "context":
            continue
        config = f"{where}/{by}/{target}" + (f" ({variant})" if variant else "")
        for other in ("static", "random"):
            rivals = [
                ms
                for (k, w, b, t, v), ms in configs.items()
                if k == other
                and w == where
                and t == target
                and b in (by, None)
                and (v == variant or k == "random")  # random masks are not trained: no variant
            ]
            if not rivals:
                continue
            equal, compute = _compute_verdict(ctx, rivals[0])
            lines.append(f"{config} against {other}: {compute}")
            for task in TASKS:
                metric = PRIMARY[task]
                cq, oq = seed_mean(ctx, task, metric), seed_mean(rivals[0], task, metric)
                if math.isnan(cq) or math.isnan(oq):
                    continue
                seeds = min(len(ctx), len(rivals[0]))
                better = cq < oq if task == "transcribe" else cq > oq
                wins.append(better and seeds >= MIN_SEEDS and equal)
                spec = ".3f" if task == "transcribe" else ".1f"
                cg, og = seed_mean(ctx, task, "gflops_total"), seed_mean(rivals[0], task, "gflops_total")
                verdict = "context wins" if better else "context loses"
                if seeds < MIN_SEEDS:
                    verdict = f"not conclusive, fewer than {MIN_SEEDS} seeds"
                elif better and not equal:
                    verdict = f"context better, not at equal compute (more than {EQUAL_COMPUTE} apart)"
                lines.append(
                    f"{config} {task}: context {metric.upper()} {cq:{spec}} "
                    f"{_spread(ctx, task, metric, spec)} ({cg:.2f} GFLOPs) vs {other} {oq:{spec}} "
                    f"{_spread(rivals[0], task, metric, spec)} ({og:.2f} GFLOPs): {verdict}"
                )
    if not wins:
        return _target(
            name, None, f"not measured: split {split!r} has no context model with a static/random twin"
        )
    note = (
        "equal compute: context's achieved sparsity over the split is at least the rival's minus "
        f"{EQUAL_COMPUTE}; executed GFLOPs per task are shown beside"
    )
    return _target(name, all(wins), f"split {split!r}; {note}. " + "; ".join(lines))


def _target_unseen(
    splits: dict[str, EvalRecord],
    main: str,
    unseen: str | None,
    dense: CandidateResult | None,
    model: CandidateResult | None,
) -> dict:
    """The WER cost of pruning on unseen voices is at most 0.005 above its cost on the test split."""
    name = "unseen_wer_gap"
    if unseen is None:
        return _target(name, None, "not measured: no eval file for an unseen split")
    if dense is None or model is None:
        return _target(name, None, _missing(main))
    udense = splits[unseen].dense()
    umodel = splits[unseen].candidate(model.name) or next(iter(paper_models(splits[unseen].models)), None)
    if udense is None or umodel is None:
        return _target(name, None, _missing(unseen))
    test = {lang: m - d for lang, (d, m) in per_language_delta(model, dense, "transcribe").items()}
    new = {lang: m - d for lang, (d, m) in per_language_delta(umodel, udense, "transcribe").items()}
    gaps = {lang: new[lang] - test[lang] for lang in new if lang in test}
    if not gaps:
        return _target(name, None, f"not measured: no transcribe language shared by {main!r} and {unseen!r}")
    worst, gap = max(gaps.items(), key=lambda kv: kv[1])
    pairs = split_pairs((model, dense), (umodel, udense), sorted(gaps))
    show = ", ".join(
        f"{lang} {new[lang]:+.3f} vs {test[lang]:+.3f} ({g:+.3f})" for lang, g in sorted(gaps.items())
    )
    detail = (
        f"{umodel.name}: WER rise vs dense on {unseen!r} minus on {main!r}, worst language {worst} "
        f"{gap:+.3f}{_shown(gap_interval(*pairs[worst]), 100)}; limit +0.005 (0.5 WER points). "
        f"Per language: {show}"
    )
    pooled = pooled_gap(pairs.values())
    if pooled is not None:  # beside the verdict: the worst of several noisy languages is biased upward
        detail += f"; pooled over every language's words {pooled[0] / 100:+.3f}{_shown(pooled[1], 100)}"
    return _target(name, gap <= 0.005 + EPS, detail)
