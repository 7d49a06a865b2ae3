"""The numbers the report shows and judges, derived from eval and bench records.

Means skip what was not measured (NaN) instead of failing, so a report over old or partial files still
renders; a cell or verdict with nothing behind it reads "—" or "not measured".
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from ctxprune.eval.records import BenchResult, CandidateResult, GroupResult

PRIMARY = {"transcribe": "wer", "translate": "bleu"}
SECONDARY = {"transcribe": "cer", "translate": "chrf"}
NA = "—"

Config = tuple[str | None, str | None, str | None, float | None, str]  # kind, where, by, target, variant


def num(x: Any) -> float:
    """A number as float; NaN for anything else (None, strings, booleans)."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def fmt(x: float | None, spec: str) -> str:
    return NA if x is None or math.isnan(x) else format(x, spec)


def task_means(model: CandidateResult, task: str) -> dict[str, float]:
    """Mean over languages of quality, executed GFLOPs, achieved sparsity, the capped share and (with
    the loop guard) the share of rows the dense teacher decoded again."""
    groups = list(model.task_groups(task).values())

    def mean_of(metric: str) -> float:
        return mean([num(g.metric(metric)) for g in groups])

    enc = [num(g.gflops_encoder) for g in groups]
    dec = [num(g.gflops_decoder) for g in groups]
    return {
        "wer": mean_of("wer"),
        "cer": mean_of("cer"),
        "bleu": mean_of("bleu"),
        "chrf": mean_of("chrf"),
        "gflops_decoder": mean(dec),
        "gflops_total": mean([e + d for e, d in zip(enc, dec, strict=True)]),
        "sparsity": mean([group_sparsity(g) for g in groups]),
        "capped": mean([num(g.capped) for g in groups]),
        "fallback": mean([num(g.fallback) for g in groups]),
    }


def group_sparsity(group: GroupResult) -> float:
    """The share of the gated stacks' compute a group's rows skipped (older files: by FLOPs)."""
    return num(group.achieved_sparsity if group.achieved_sparsity is not None else group.sparsity_flops)


def achieved_sparsity(model: CandidateResult) -> float:
    """A set's achieved sparsity over the whole split: the mean over its (task, language) groups, each
    of which has as many rows as the next. This is what the training target constrains; how a
    context-aware set shares it between tasks is its own choice."""
    return mean([group_sparsity(g) for g in model.groups.values()])


WHOLE_MODEL_GFLOPS = ("gflops_encoder", "gflops_decoder")


def skipped_share(
    model: CandidateResult, dense: CandidateResult | None, parts: tuple[str, ...] = WHOLE_MODEL_GFLOPS
) -> float:
    """The mean share of `parts`' FLOPs (the whole model, or `("gflops_decoder",)`) that the set skipped,
    over its groups: measured (its executed GFLOPs against dense's on the same rows, so that decoded
    lengths and the loop guard's second decodings count) where both have GFLOPs, else, for the whole
    model, the share its masks skip."""
    shares = []
    for key, g in model.groups.items():
        d = dense.groups.get(key) if dense is not None else None
        ran = [sum(num(getattr(x, p)) for p in parts) for x in (g, d) if x is not None]
        measured = len(ran) == 2 and not any(math.isnan(x) for x in ran)
        from_masks = num(g.sparsity_flops) if parts == WHOLE_MODEL_GFLOPS else math.nan
        shares.append(1 - ran[0] / ran[1] if measured else from_masks)
    return mean(shares)


def per_language_delta(
    model: CandidateResult, base: CandidateResult, task: str
) -> dict[str, tuple[float, float]]:
    """{language: (base quality, model quality)} on the task's primary metric."""
    metric = PRIMARY[task]
    mg, bg = model.task_groups(task), base.task_groups(task)
    pairs = {lang: (num(bg[lang].metric(metric)), num(mg[lang].metric(metric))) for lang in mg if lang in bg}
    return {lang: p for lang, p in pairs.items() if not any(math.isnan(v) for v in p)}


def split_pairs(
    seen: tuple[CandidateResult, CandidateResult],
    unseen: tuple[CandidateResult, CandidateResult],
    langs: list[str],
) -> dict[str, tuple[tuple[GroupResult, GroupResult], tuple[GroupResult, GroupResult]]]:
    """{language: ((set, dense) transcribe groups on the main split, the same on the unseen one)}: what
    `significance.gap_interval` and `pooled_gap` resample."""
    return {
        lang: tuple(
            (x.task_groups("transcribe")[lang], d.task_groups("transcribe")[lang]) for x, d in (seen, unseen)
        )
        for lang in langs
    }


def context_models(models: list[CandidateResult], by: str, target: float) -> list[CandidateResult]:
    """The context-aware decoder sets of one weighting and target, in the evaluation's order."""
    return [
        m
        for m in models
        if m.kind == "context"
        and m.where == "decoder"
        and m.sparsity_by == by
        and m.target_sparsity == target
    ]


def paper_models(models: list[CandidateResult]) -> list[CandidateResult]:
    """The configuration the paper reports: context-aware, decoder only, 50% of decoder FLOPs."""
    return context_models(models, "flops", 0.5)


def by_config(models: list[CandidateResult]) -> dict[Config, list[CandidateResult]]:
    """Models that differ only by seed, together: (kind, where, sparsity_by, target, variant) -> models."""
    out: dict[Config, list[CandidateResult]] = defaultdict(list)
    for m in models:
        out[(m.kind, m.where, m.sparsity_by, m.target_sparsity, m.variant or "")].append(m)
    return out


def seed_mean(models: list[CandidateResult], task: str, key: str) -> float:
    return mean([task_means(m, task)[key] for m in models])


def reduction(rows: list[BenchResult], row: BenchResult) -> float:
    """Latency reduction vs dense at the same batch, from the medians; the file's own field as fallback."""
    dense = next((r for r in rows if r.name == "dense" and r.batch == row.batch), None)
    if dense and num(dense.median_ms) > 0:
        return 1 - num(row.median_ms) / num(dense.median_ms)
    return num(row.reduction_vs_dense)
