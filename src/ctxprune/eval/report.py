"""Turn eval and bench result JSON into one report: a self-contained HTML file and a Markdown twin.

This module reads the records, joins evaluations run in parts, and lays out the sections; the targets
(`targets.py`), figures (`figures.py`) and the two formats (`render.py`) live beside it. The "Targets"
section restates the project's success criteria as MET / NOT MET with the numbers behind each verdict.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from ctxprune.errors import CtxpruneError
from ctxprune.eval.figures import keep_png, latency_png, pareto_png
from ctxprune.eval.measures import (
    NA,
    PRIMARY,
    SECONDARY,
    fmt,
    num,
    paper_models,
    per_language_delta,
    reduction,
    skipped_share,
    split_pairs,
    task_means,
)
from ctxprune.eval.records import BenchRecord, CandidateResult, EvalRecord, read_record
from ctxprune.eval.render import Block, render_html, render_md
from ctxprune.eval.significance import cost_interval, gap_interval, pooled_gap
from ctxprune.eval.targets import judge_targets
from ctxprune.models.whisper_tokens import TASKS
from ctxprune.paths import write_bytes_atomic, write_json_atomic

# The paper's figures at 50% decoder sparsity.
PAPER_ASR_TIME, PAPER_ASR_WER, PAPER_ST_TIME = -0.286, 0.028, -0.343


PLOT_PATTERNS = ("pareto_*.png", "keep_*.png", "latency_*.png")  # the names of the plots it writes


def build_report(results: list[Path], out: Path, title: str = "ctxprune report") -> dict:
    """Write report.html, report.md, their PNGs and summary.json into `out`; return the summary.

    The summary is {"targets": [{"name", "met", "detail"}, ...], "models": {split: {set: its figures
    against dense}}, "unseen_gaps": {unseen split: {set: its gaps}}, "files": [paths written]}.
    """
    evals, benches = _load([Path(p) for p in results])
    out = Path(out)
    splits = {e.split: e for e in evals}
    main = _main_split(splits)
    pngs: dict[str, bytes] = {}
    targets = judge_targets(splits, main, benches)
    figures = _model_figures(splits)

    blocks: list[Block] = [("h", 1, title), ("h", 2, "Targets"), ("targets", targets)]
    for split, ev in splits.items():
        blocks += _split_blocks(split, ev, figures.get(split, {}), pngs)
    gaps = _unseen_gaps(splits, main)
    main_dense = splits[main].dense()
    langs = sorted(main_dense.task_groups("transcribe")) if main_dense else []
    blocks += _unseen_gap_blocks(gaps, main, langs)
    if benches:
        blocks.append(("h", 2, "Latency"))
        for i, (path, bench) in enumerate(benches):
            blocks += _latency_blocks(i, path, bench, pngs)
    blocks += _paper_blocks(splits, benches)

    written = []
    for name, data in pngs.items():
        write_bytes_atomic(out / name, data)
        written.append(out / name)
    for pattern in PLOT_PATTERNS:  # an earlier report's plots in the same directory would look current
        for stale in out.glob(pattern):
            if stale.name not in pngs:
                stale.unlink()
    write_bytes_atomic(out / "report.html", render_html(title, blocks, pngs).encode())
    write_bytes_atomic(out / "report.md", render_md(blocks).encode())
    written += [out / "report.html", out / "report.md", out / "summary.json"]
    summary = {"targets": targets, "models": figures, "unseen_gaps": gaps, "files": [str(p) for p in written]}
    write_json_atomic(out / "summary.json", summary)
    return summary


# ---------------------------------------------------------------- loading


def _load(paths: list[Path]) -> tuple[list[EvalRecord], list[tuple[Path, BenchRecord]]]:
    """Read the files and sort them by kind; at least one must be an evaluation."""
    evals, benches = [], []
    for path in paths:
        record = read_record(path)
        if isinstance(record, EvalRecord):
            evals.append(record)
        else:
            benches.append((path, record))
    if not evals:
        raise CtxpruneError('no eval result among the inputs; pass at least one JSON with "kind": "eval"')
    return _merge_parts(evals), benches


def _merge_parts(evals: list[EvalRecord]) -> list[EvalRecord]:
    """One eval record per split. An evaluation run in parallel parts (files of one split and corpus, split
    by candidate, by group, or both) is joined; every candidate of a group must have decoded its rows."""
    by_split: dict[str, EvalRecord] = {}
    for ev in evals:
        first = by_split.setdefault(ev.split, dataclasses.replace(ev, models=[]))
        if first.data != ev.data:
            raise CtxpruneError(
                f"two eval files for split {ev.split!r} decoded different corpora; "
                "pass one evaluation per split"
            )
        for m in ev.models:
            twin = first.candidate(m.name)
            if twin is None:
                first.models.append(dataclasses.replace(m, groups=dict(m.groups)))
            elif twice := sorted(set(twin.groups) & set(m.groups)):
                raise CtxpruneError(
                    f"candidate {m.name!r} ({twice[0]}) appears in two eval files for split {ev.split!r}"
                )
            else:
                twin.groups.update(m.groups)
    for ev in by_split.values():
        _check_same_rows(ev)
    return list(by_split.values())


def _check_same_rows(ev: EvalRecord) -> None:
    """Candidates are compared group by group, so each group's rows must be the same for all of them;
    the record's row count becomes that of its groups."""
    rows: dict[str, tuple] = {}
    for m in ev.models:
        for key, g in m.groups.items():
            n, digest = rows.setdefault(key, (g.n, g.rows_digest))
            if n != g.n or (None not in (digest, g.rows_digest) and digest != g.rows_digest):
                raise CtxpruneError(
                    f"the eval files for split {ev.split!r} decoded different rows of {key}; "
                    "pass one evaluation per split (its parts may be several files)"
                )
    if all(n is not None for n, _ in rows.values()):
        ev.rows = sum(n for n, _ in rows.values())


def _main_split(splits: dict[str, EvalRecord]) -> str:
    """The split the targets are judged on: "test", else the first one that is not an unseen split."""
    if "test" in splits:
        return "test"
    return next((s for s in splits if "unseen" not in s), next(iter(splits)))


# ---------------------------------------------------------------- sections


def _slug(text: object) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _or_unknown(value: object) -> object:
    return "?" if value is None else value


def _split_blocks(
    split: str, ev: EvalRecord, figures: dict[str, dict], pngs: dict[str, bytes]
) -> list[Block]:
    models = ev.models
    keys = ("data", "device", "torch", "normalizer", "bleu_signature")
    meta = ", ".join(f"{k}: {getattr(ev, k)}" for k in keys if getattr(ev, k))
    blocks: list[Block] = [("h", 2, f"Split: {split}"), ("p", meta or "no run metadata")]
    blocks.append(("h", 3, "What it saves, what it costs"))
    blocks.append(
        (
            "p",
            "Means over languages; GFLOPs are executed per utterance; deltas are against dense; "
            "capped: the share of rows whose decode hit the length cap (a repetition loop, as a rule); "
            "fallback (with the loop guard): the share of rows that looped and were decoded again by the "
            "dense teacher, whose cost the GFLOPs include.",
        )
    )
    dense = ev.dense()
    for task in TASKS:
        blocks.append(("table", *_cost_table(models, dense, task)))
    if dense:
        blocks.append(("h", 3, "Per language, against dense"))
        blocks.append(
            (
                "p",
                "The quality targets hold per language: WER rise in points, BLEU drop; in brackets the "
                "95% bootstrap interval over the rows, where the eval recorded row statistics.",
            )
        )
        for task in TASKS:
            blocks.append(("table", *_language_table(figures, dense, task)))
    pareto = f"pareto_{_slug(split)}.png"
    pngs[pareto] = pareto_png(models, split)
    blocks += [("h", 3, "Quality against executed compute"), ("img", pareto, f"Pareto plot, split {split}")]
    for kind in ("context", "static"):
        chosen = [m for m in models if m.kind == kind]
        if chosen:
            blocks.append(("h", 3, f"Keep rates, {kind} gating"))
        for j, m in enumerate(chosen):
            file = f"keep_{_slug(split)}_{kind}_{j:02d}_{_slug(m.name)}.png"
            pngs[file] = keep_png(m, split)
            blocks.append(("img", file, f"keep rates of {m.name}, split {split}"))
    return blocks


def _cost_table(
    models: list[CandidateResult], dense: CandidateResult | None, task: str
) -> tuple[list[str], list[list[str]]]:
    metric, second = PRIMARY[task], SECONDARY[task]
    base = task_means(dense, task) if dense else None
    spec = ".3f" if task == "transcribe" else ".1f"
    m_head, s_head = metric.upper(), "CER" if task == "transcribe" else "chrF"
    headers = [f"{task} model", "kind", "where", "by", "target", m_head, s_head, f"Δ{m_head}"]
    headers += ["GFLOPs enc+dec", "GFLOPs dec", "sparsity", "capped", "fallback"]
    rows = []
    for m in models:
        t = task_means(m, task)
        delta = t[metric] - base[metric] if base else math.nan
        config = [m.kind, m.where, m.sparsity_by]
        row = [str(m.name), *(str(c or NA) for c in config), fmt(num(m.target_sparsity), ".2f")]
        row += [fmt(t[metric], spec), fmt(t[second], spec), fmt(delta, "+" + spec)]
        row += [fmt(t["gflops_total"], ".2f"), fmt(t["gflops_decoder"], ".2f"), fmt(t["sparsity"], ".1%")]
        row += [fmt(t["capped"], ".1%"), fmt(t["fallback"], ".1%")]
        rows.append(row)
    return headers, rows


def _model_figures(splits: dict[str, EvalRecord]) -> dict[str, dict[str, dict]]:
    """Per split with a dense reference, each set's skipped FLOP shares (mean over groups, executed
    against dense) and per-language costs in the targets' units, with their 95% bootstrap intervals
    where the eval recorded row statistics: what a README table cites."""
    out = {}
    for split, ev in splits.items():
        dense = ev.dense()
        if dense is None:
            continue
        out[split] = {
            m.name: {
                "decoder_flops_skipped": skipped_share(m, dense, ("gflops_decoder",)),
                "whole_model_flops_skipped": skipped_share(m, dense),
                "wer_rise_points": _changes(m, dense, "transcribe"),
                "bleu_drop": _changes(m, dense, "translate"),
                "wer_rise_interval": _intervals(m, dense, "transcribe"),
                "bleu_drop_interval": _intervals(m, dense, "translate"),
            }
            for m in ev.models
            if m is not dense
        }
    return out


def _changes(model: CandidateResult, dense: CandidateResult, task: str) -> dict[str, float]:
    """{language: WER rise in points or BLEU drop} against dense: the units the targets use."""
    sign = 100 if task == "transcribe" else -1
    return {lang: sign * (q - base) for lang, (base, q) in per_language_delta(model, dense, task).items()}


def _intervals(model: CandidateResult, dense: CandidateResult, task: str) -> dict[str, list[float]]:
    """{language: [low, high]} of the cost's 95% bootstrap interval, for the languages that have one."""
    out = {}
    for lang, group in model.task_groups(task).items():
        base = dense.task_groups(task).get(lang)
        interval = cost_interval(group, base, task) if base is not None else None
        if interval is not None:
            out[lang] = list(interval)
    return out


def _with_interval(value: float | None, interval: list[float] | tuple[float, float] | None) -> str:
    shown = fmt(value, "+.1f")
    return shown if interval is None else f"{shown} [{interval[0]:+.1f}, {interval[1]:+.1f}]"


def _language_table(
    figures: dict[str, dict], dense: CandidateResult, task: str
) -> tuple[list[str], list[list[str]]]:
    langs = sorted(dense.task_groups(task))
    if task == "transcribe":
        what, value, interval = "WER rise, points", "wer_rise_points", "wer_rise_interval"
    else:
        what, value, interval = "BLEU drop", "bleu_drop", "bleu_drop_interval"
    rows = []
    for name, f in figures.items():
        change, bounds = f[value], f[interval]
        rows.append([name, *(_with_interval(change.get(lang), bounds.get(lang)) for lang in langs)])
    return [f"{task} model ({what})", *langs], rows


def _unseen_gaps(splits: dict[str, EvalRecord], main: str) -> dict[str, dict[str, dict]]:
    """{unseen split: {set: {"gap_points": {language: ...}, "gap_interval": {language: [low, high]},
    "pooled_gap_points": ..., "pooled_gap_interval": [low, high]}}}: the WER rise on the unseen split
    minus the rise on the main split, in points, per language and over all languages' words, with its
    95% bootstrap interval where both splits recorded row statistics."""
    out: dict[str, dict[str, dict]] = {}
    base = splits[main]
    main_dense = base.dense()
    if main_dense is None:
        return out
    for split, ev in splits.items():
        dense = ev.dense()
        if "unseen" not in split or split == main or dense is None:
            continue
        for m in ev.models:
            seen = base.candidate(m.name)
            if m is dense or seen is None:
                continue
            here, there = _changes(m, dense, "transcribe"), _changes(seen, main_dense, "transcribe")
            langs = sorted(set(here) & set(there))
            pairs = split_pairs((seen, main_dense), (m, dense), langs)
            intervals = {lang: gap_interval(*pairs[lang]) for lang in langs}
            entry = {
                "gap_points": {lang: here[lang] - there[lang] for lang in langs},
                "gap_interval": {lang: list(i) for lang, i in intervals.items() if i is not None},
            }
            # every language's words together: a loss common to all of them shows through the noise
            pooled = pooled_gap(pairs.values())
            if pooled is not None:
                entry |= {"pooled_gap_points": pooled[0], "pooled_gap_interval": list(pooled[1])}
            out.setdefault(split, {})[m.name] = entry
    return out


def _unseen_gap_blocks(gaps: dict[str, dict[str, dict]], main: str, langs: list[str]) -> list[Block]:
    """Per set and language, the WER rise on each unseen split minus the rise on the main split: how
    much of a set's cost the main split's voices hide."""
    blocks: list[Block] = []
    for split, sets in gaps.items():
        rows = [
            [
                name,
                *(_with_interval(g["gap_points"].get(lang), g["gap_interval"].get(lang)) for lang in langs),
                _with_interval(g.get("pooled_gap_points"), g.get("pooled_gap_interval")),
            ]
            for name, g in sets.items()
        ]
        blocks.append(("h", 3, f"Unseen voices: WER rise on {split} minus on {main}, points [95% interval]"))
        blocks.append(("table", ["model", *langs, "all languages"], rows))
    return blocks


def _latency_blocks(i: int, path: Path, bench: BenchRecord, pngs: dict[str, bytes]) -> list[Block]:
    rows = bench.results
    where = f"{_or_unknown(bench.device)} ({_or_unknown(bench.device_name)})"
    device = f"{where}, {_or_unknown(bench.threads)} threads"
    blocks: list[Block] = [("p", f"{path.name}: {device}")]
    for batch in sorted({r.batch for r in rows}):
        at = [r for r in rows if r.batch == batch]
        file = f"latency_{i:02d}_{_slug(bench.device or 'x')}_b{_slug(batch)}.png"
        pngs[file] = latency_png(at, rows, f"{device}, batch {batch}")
        blocks.append(("img", file, f"latency, {device}, batch {batch}"))
        table = []
        for r in at:
            spread = f"{fmt(num(r.p25_ms), '.1f')}–{fmt(num(r.p75_ms), '.1f')}"
            table.append([str(r.name), str(batch), fmt(num(r.median_ms), ".1f"), spread])
            table[-1] += [fmt(num(r.tokens_per_s), ".1f"), fmt(reduction(rows, r), ".1%")]
        headers = ["variant", "batch", "median ms", "p25–p75 ms", "tokens/s", "reduction"]
        blocks.append(("table", headers, table))
    return blocks


def _paper_blocks(splits: dict[str, EvalRecord], benches: list[tuple[Path, BenchRecord]]) -> list[Block]:
    headers = ["model", "split", "ΔWER rel.", "ΔWER abs.", "ΔBLEU", "latency reduction"]
    paper_time = f"ASR {-PAPER_ASR_TIME:.1%}, ST {-PAPER_ST_TIME:.1%}"
    rows = [["paper (50% decoder)", NA, f"{PAPER_ASR_WER:+.1%}", NA, "no loss", paper_time]]
    for split, ev in splits.items():
        dense = ev.dense()
        for m in paper_models(ev.models):
            if dense is None:
                continue
            w, dw = task_means(m, "transcribe")["wer"], task_means(dense, "transcribe")["wer"]
            b, db = task_means(m, "translate")["bleu"], task_means(dense, "translate")["bleu"]
            lat = []
            for path, bench in benches:
                for r in bench.results:
                    if r.name == m.name:
                        red = reduction(bench.results, r)
                        lat.append(f"{_or_unknown(bench.device)} b{r.batch} {fmt(red, '.1%')} ({path.name})")
            rel = (w - dw) / dw if dw else math.nan
            row = [str(m.name), split, fmt(rel, "+.1%"), fmt(w - dw, "+.3f"), fmt(b - db, "+.1f")]
            rows.append([*row, "; ".join(lat) or "not benchmarked"])
    note = (
        "The paper reports, at 50% decoder sparsity, ASR −28.6% time with +2.8% WER and ST −34.3% time with "
        "no BLEU loss. Ours: context-aware, decoder only, 50% of decoder FLOPs. Our bench times a task mix, "
        "not ASR and ST apart."
    )
    return [("h", 2, "Beside the paper"), ("p", note), ("table", headers, rows)]
