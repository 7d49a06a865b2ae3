"""Turn eval and bench result JSON into one report: a self-contained HTML file and a Markdown twin.

Both formats are rendered from one list of blocks, so they always say the same thing. The "Targets"
section restates the project's success criteria as MET / NOT MET with the numbers behind each verdict.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ctxprune.errors import CtxpruneError  # noqa: E402
from ctxprune.paths import write_bytes_atomic, write_json_atomic  # noqa: E402

TASKS = ("transcribe", "translate")
PRIMARY = {"transcribe": "wer", "translate": "bleu"}
SECONDARY = {"transcribe": "cer", "translate": "chrf"}
MARKERS = {"dense": "*", "context": "o", "static": "s", "random": "x"}
COLOURS = {None: "black", "decoder": "tab:blue", "both": "tab:orange"}
GATE_COLUMNS = [("enc", "attn"), ("enc", "ffn"), ("dec", "self_attn"), ("dec", "cross_attn"), ("dec", "ffn")]
EPS = 1e-9  # so that 0.18 - 0.17 counts as a rise of exactly 0.01
NA = "—"

# The paper's figures at 50% decoder sparsity.
PAPER_ASR_TIME, PAPER_ASR_WER, PAPER_ST_TIME = -0.286, 0.028, -0.343

# ("h", level, text) | ("p", text) | ("table", headers, rows) | ("img", file, alt) | ("targets", targets)
Block = tuple


def build_report(results: list[Path], out: Path, title: str = "ctxprune report") -> dict:
    """Write report.html, report.md, their PNGs and summary.json into `out`; return the summary.

    The summary is {"targets": [{"name", "met", "detail"}, ...], "files": [paths written]}.
    """
    evals, benches = _load([Path(p) for p in results])
    out = Path(out)
    splits = {e["split"]: e for e in evals}
    main = _main_split(splits)
    pngs: dict[str, bytes] = {}
    targets = _targets(splits, main, benches)

    blocks: list[Block] = [("h", 1, title), ("h", 2, "Targets"), ("targets", targets)]
    for split, ev in splits.items():
        blocks += _split_blocks(split, ev, pngs)
    if benches:
        blocks.append(("h", 2, "Latency"))
        for i, (path, bench) in enumerate(benches):
            blocks += _latency_blocks(i, path, bench, pngs)
    blocks += _paper_blocks(splits, benches)

    written = []
    for name, data in pngs.items():
        write_bytes_atomic(out / name, data)
        written.append(out / name)
    write_bytes_atomic(out / "report.html", _render_html(title, blocks, pngs).encode())
    write_bytes_atomic(out / "report.md", _render_md(blocks).encode())
    written += [out / "report.html", out / "report.md", out / "summary.json"]
    summary = {"targets": targets, "files": [str(p) for p in written]}
    write_json_atomic(out / "summary.json", summary)
    return summary


# ---------------------------------------------------------------- loading


def _load(paths: list[Path]) -> tuple[list[dict], list[tuple[Path, dict]]]:
    """Read and sort the files by kind, failing with a message that names the file and the fix."""
    evals, benches = [], []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CtxpruneError(f"cannot read result file {path}: {e}; check the path") from e
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise CtxpruneError(
                f"{path} is not valid JSON ({e}); re-run the eval or bench that wrote it"
            ) from e
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if kind == "eval":
            _check_eval(path, obj)
            evals.append(obj)
        elif kind == "bench":
            _check_bench(path, obj)
            benches.append((path, obj))
        else:
            raise CtxpruneError(
                f'{path} has kind {kind!r}, expected "eval" or "bench"; pass only eval/bench result JSON'
            )
    if not evals:
        raise CtxpruneError('no eval result among the inputs; pass at least one JSON with "kind": "eval"')
    return _merge_parts(evals), benches


def _merge_parts(evals: list[dict]) -> list[dict]:
    """One eval record per split: files of one split (an evaluation run in parallel parts) are joined
    when they decoded the same rows of the same corpus and name each candidate once."""
    by_split: dict[str, dict] = {}
    for ev in evals:
        first = by_split.get(ev["split"])
        if first is None:
            by_split[ev["split"]] = {**ev, "models": list(ev["models"])}
            continue
        if (first.get("data"), first.get("rows")) != (ev.get("data"), ev.get("rows")):
            raise CtxpruneError(
                f"two eval files for split {ev['split']!r} decoded different rows or corpora; "
                "pass one evaluation per split (its parts may be several files)"
            )
        names = {m["name"] for m in first["models"]}
        if twice := [m["name"] for m in ev["models"] if m["name"] in names]:
            raise CtxpruneError(f"candidate {twice[0]!r} appears in two eval files for split {ev['split']!r}")
        first["models"] += ev["models"]
    return list(by_split.values())


def _check_eval(path: Path, obj: dict) -> None:
    models = obj.get("models")
    ok = isinstance(obj.get("split"), str) and isinstance(models, list)
    ok = ok and all(isinstance(m, dict) and "name" in m and isinstance(m.get("groups"), dict) for m in models)
    if not ok:
        raise CtxpruneError(f'{path}: eval JSON needs "split" and "models" with "name" and "groups" each')


def _check_bench(path: Path, obj: dict) -> None:
    rows = obj.get("results")
    need = ("name", "batch", "median_ms")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in need) for r in rows):
        raise CtxpruneError(f'{path}: bench JSON needs "results" with "name", "batch" and "median_ms" each')


def _main_split(splits: dict[str, dict]) -> str:
    """The split the targets are judged on: "test", else the first one that is not an unseen split."""
    if "test" in splits:
        return "test"
    return next((s for s in splits if "unseen" not in s), next(iter(splits)))


# ---------------------------------------------------------------- numbers


def _num(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _fmt(x: float, spec: str) -> str:
    return NA if x is None or math.isnan(x) else format(x, spec)


def _groups(model: dict, task: str) -> dict[str, dict]:
    """{language: group} for one task."""
    return {
        k.split("/", 1)[1]: g for k, g in model["groups"].items() if k.split("/", 1)[0] == task and "/" in k
    }


def _task_means(model: dict, task: str) -> dict[str, float]:
    """Mean over languages of quality, executed GFLOPs and achieved sparsity."""
    groups = list(_groups(model, task).values())

    def mean_of(key: str) -> float:
        return _mean([_num(g.get(key)) for g in groups])

    enc = [_num(g.get("gflops_encoder")) for g in groups]
    dec = [_num(g.get("gflops_decoder")) for g in groups]
    return {
        "wer": mean_of("wer"),
        "cer": mean_of("cer"),
        "bleu": mean_of("bleu"),
        "chrf": mean_of("chrf"),
        "gflops_decoder": _mean(dec),
        "gflops_total": _mean([e + d for e, d in zip(enc, dec, strict=True)]),
        "sparsity": _mean([_num(g.get("achieved_sparsity", g.get("sparsity_flops"))) for g in groups]),
    }


def _per_language_delta(model: dict, base: dict, task: str) -> dict[str, tuple[float, float]]:
    """{language: (base quality, model quality)} on the task's primary metric."""
    metric = PRIMARY[task]
    mg, bg = _groups(model, task), _groups(base, task)
    pairs = {lang: (_num(bg[lang].get(metric)), _num(mg[lang].get(metric))) for lang in mg if lang in bg}
    return {lang: p for lang, p in pairs.items() if not any(math.isnan(v) for v in p)}


def _dense(models: list[dict]) -> dict | None:
    return next((m for m in models if m.get("kind") == "dense"), None)


def _paper_models(models: list[dict]) -> list[dict]:
    """The configuration the paper reports: context-aware, decoder only, 50% of decoder FLOPs."""
    return [
        m
        for m in models
        if m.get("kind") == "context"
        and m.get("where") == "decoder"
        and m.get("sparsity_by") == "flops"
        and m.get("target_sparsity") == 0.5
    ]


def _by_config(models: list[dict]) -> dict[tuple, list[dict]]:
    """Models that differ only by seed, together: (kind, where, sparsity_by, target) -> models."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for m in models:
        out[(m.get("kind"), m.get("where"), m.get("sparsity_by"), m.get("target_sparsity"))].append(m)
    return out


def _seed_mean(models: list[dict], task: str, key: str) -> float:
    return _mean([_task_means(m, task)[key] for m in models])


def _reduction(rows: list[dict], row: dict) -> float:
    """Latency reduction vs dense at the same batch, from the medians; the file's own field as fallback."""
    dense = next((r for r in rows if r["name"] == "dense" and r["batch"] == row["batch"]), None)
    if dense and _num(dense["median_ms"]) > 0:
        return 1 - _num(row["median_ms"]) / _num(dense["median_ms"])
    return _num(row.get("reduction_vs_dense"))


# ---------------------------------------------------------------- targets


def _target(name: str, met: bool | None, detail: str) -> dict:
    return {"name": name, "met": met, "detail": detail}


def _targets(splits: dict[str, dict], main: str, benches: list[tuple[Path, dict]]) -> list[dict]:
    models = splits[main]["models"]
    dense, chosen = _dense(models), next(iter(_paper_models(models)), None)
    unseen = next((s for s in splits if "unseen" in s), None)
    return [
        _target_quality("wer_rise_at_50_decoder", "transcribe", main, dense, chosen),
        _target_quality("bleu_drop_at_50_decoder", "translate", main, dense, chosen),
        _target_latency(chosen, benches),
        _target_baselines(main, models),
        _target_unseen(splits, main, unseen, dense, chosen),
    ]


def _missing(split: str) -> str:
    return f"not measured: split {split!r} lacks a dense model or a context/decoder/flops/0.5 model"


def _target_quality(name: str, task: str, split: str, dense: dict | None, model: dict | None) -> dict:
    """WER may rise by 0.01 (one WER point, WER being a fraction) and BLEU may drop by 1.0, per language."""
    if dense is None or model is None:
        return _target(name, None, _missing(split))
    pairs = _per_language_delta(model, dense, task)
    if not pairs:
        return _target(name, None, f"not measured: no {task} groups shared by dense and {model['name']}")
    if task == "transcribe":
        losses = {lang: m - d for lang, (d, m) in pairs.items()}
        limit, what = 0.01, "WER rise"
        note = "limit +0.010 per language (WER is a fraction here: 1.0 absolute WER point = 0.01)"
        show = ", ".join(f"{lang} {d:.3f}→{m:.3f} ({m - d:+.3f})" for lang, (d, m) in sorted(pairs.items()))
    else:
        losses = {lang: d - m for lang, (d, m) in pairs.items()}
        limit, what = 1.0, "BLEU drop"
        note = "limit 1.0 BLEU per language"
        show = ", ".join(f"{lang} {d:.1f}→{m:.1f} ({m - d:+.1f})" for lang, (d, m) in sorted(pairs.items()))
    worst, loss = max(losses.items(), key=lambda kv: kv[1])
    detail = (
        f"{model['name']} vs dense on split {split!r}: worst language {worst}, {what} {loss:.3f}; {note}. "
        f"Per language: {show}"
    )
    return _target(name, loss <= limit + EPS, detail)


def _target_latency(model: dict | None, benches: list[tuple[Path, dict]]) -> dict:
    """GPU decoding at batch 1 at least 35% faster than dense."""
    name = "gpu_latency_batch1"
    if model is None:
        return _target(
            name, None, "not measured: no context/decoder/flops/0.5 model to look up in bench files"
        )
    for path, bench in benches:
        if bench.get("device") != "cuda":
            continue
        rows = bench["results"]
        row = next((r for r in rows if r["name"] == model["name"] and r["batch"] == 1), None)
        dense = next((r for r in rows if r["name"] == "dense" and r["batch"] == 1), None)
        if row and dense:
            red = _reduction(rows, row)
            detail = (
                f"{model['name']} {_num(row['median_ms']):.1f} ms vs dense {_num(dense['median_ms']):.1f} ms "
                f"median at batch 1 on {bench.get('device_name', 'cuda')} ({path.name}): "
                f"{red:.1%} faster; need at least 35.0%"
            )
            return _target(name, red >= 0.35 - EPS, detail)
    return _target(
        name, None, f"not measured: no cuda bench file with {model['name']!r} and dense at batch 1"
    )


def _target_baselines(split: str, models: list[dict]) -> dict:
    """Context-aware gating beats static and random gating of the same target on mean quality."""
    name = "context_beats_static_random"
    configs = _by_config(models)
    lines, wins = [], []
    for (kind, where, by, target), ctx in configs.items():
        if kind != "context":
            continue
        for other in ("static", "random"):
            rivals = [
                ms
                for (k, w, b, t), ms in configs.items()
                if k == other and w == where and t == target and b in (by, None)
            ]
            if not rivals:
                continue
            for task in TASKS:
                metric = PRIMARY[task]
                cq, oq = _seed_mean(ctx, task, metric), _seed_mean(rivals[0], task, metric)
                if math.isnan(cq) or math.isnan(oq):
                    continue
                win = cq < oq if task == "transcribe" else cq > oq
                wins.append(win)
                spec = ".3f" if task == "transcribe" else ".1f"
                cg, og = _seed_mean(ctx, task, "gflops_total"), _seed_mean(rivals[0], task, "gflops_total")
                lines.append(
                    f"{where}/{by}/{target} {task}: context {metric.upper()} {cq:{spec}} "
                    f"({cg:.2f} GFLOPs) vs {other} {oq:{spec}} ({og:.2f} GFLOPs, {len(rivals[0])} seed(s)): "
                    f"{'context wins' if win else 'context loses'}"
                )
    if not wins:
        return _target(
            name, None, f"not measured: split {split!r} has no context model with a static/random twin"
        )
    note = "executed compute is close but not exactly equal, so both models' mean GFLOPs are shown"
    return _target(name, all(wins), f"split {split!r}; {note}. " + "; ".join(lines))


def _target_unseen(
    splits: dict[str, dict], main: str, unseen: str | None, dense: dict | None, model: dict | None
) -> dict:
    """The WER cost of pruning on unseen voices is at most 0.005 above its cost on the test split."""
    name = "unseen_wer_gap"
    if unseen is None:
        return _target(name, None, "not measured: no eval file for an unseen split")
    if dense is None or model is None:
        return _target(name, None, _missing(main))
    umodels = splits[unseen]["models"]
    udense = _dense(umodels)
    umodel = next((m for m in umodels if m["name"] == model["name"]), None) or next(
        iter(_paper_models(umodels)), None
    )
    if udense is None or umodel is None:
        return _target(name, None, _missing(unseen))
    test = {lang: m - d for lang, (d, m) in _per_language_delta(model, dense, "transcribe").items()}
    new = {lang: m - d for lang, (d, m) in _per_language_delta(umodel, udense, "transcribe").items()}
    gaps = {lang: new[lang] - test[lang] for lang in new if lang in test}
    if not gaps:
        return _target(name, None, f"not measured: no transcribe language shared by {main!r} and {unseen!r}")
    worst, gap = max(gaps.items(), key=lambda kv: kv[1])
    show = ", ".join(
        f"{lang} {new[lang]:+.3f} vs {test[lang]:+.3f} ({g:+.3f})" for lang, g in sorted(gaps.items())
    )
    detail = (
        f"{umodel['name']}: WER rise vs dense on {unseen!r} minus on {main!r}, worst language {worst} "
        f"{gap:+.3f}; limit +0.005 (0.5 WER points). Per language: {show}"
    )
    return _target(name, gap <= 0.005 + EPS, detail)


# ---------------------------------------------------------------- sections


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _split_blocks(split: str, ev: dict, pngs: dict[str, bytes]) -> list[Block]:
    models = ev["models"]
    meta = ", ".join(
        f"{k}: {ev[k]}" for k in ("data", "device", "torch", "normalizer", "bleu_signature") if ev.get(k)
    )
    blocks: list[Block] = [("h", 2, f"Split: {split}"), ("p", meta or "no run metadata")]
    blocks.append(("h", 3, "What it saves, what it costs"))
    blocks.append(("p", "Means over languages; GFLOPs are executed per utterance; deltas are against dense."))
    dense = _dense(models)
    for task in TASKS:
        blocks.append(("table", *_cost_table(models, dense, task)))
    pareto = f"pareto_{_slug(split)}.png"
    pngs[pareto] = _pareto_png(models, split)
    blocks += [("h", 3, "Quality against executed compute"), ("img", pareto, f"Pareto plot, split {split}")]
    for kind in ("context", "static"):
        chosen = [m for m in models if m.get("kind") == kind]
        if chosen:
            blocks.append(("h", 3, f"Keep rates, {kind} gating"))
        for j, m in enumerate(chosen):
            file = f"keep_{_slug(split)}_{kind}_{j:02d}_{_slug(m['name'])}.png"
            pngs[file] = _keep_png(m, split)
            blocks.append(("img", file, f"keep rates of {m['name']}, split {split}"))
    return blocks


def _cost_table(models: list[dict], dense: dict | None, task: str) -> tuple[list[str], list[list[str]]]:
    metric, second = PRIMARY[task], SECONDARY[task]
    base = _task_means(dense, task) if dense else None
    spec = ".3f" if task == "transcribe" else ".1f"
    m_head, s_head = metric.upper(), "CER" if task == "transcribe" else "chrF"
    headers = [f"{task} model", "kind", "where", "by", "target", m_head, s_head, f"Δ{m_head}"]
    headers += ["GFLOPs enc+dec", "GFLOPs dec", "sparsity"]
    rows = []
    for m in models:
        t = _task_means(m, task)
        delta = t[metric] - base[metric] if base else math.nan
        config = [m.get("kind"), m.get("where"), m.get("sparsity_by")]
        row = [str(m["name"]), *(str(c or NA) for c in config), _fmt(_num(m.get("target_sparsity")), ".2f")]
        row += [_fmt(t[metric], spec), _fmt(t[second], spec), _fmt(delta, "+" + spec)]
        row += [_fmt(t["gflops_total"], ".2f"), _fmt(t["gflops_decoder"], ".2f"), _fmt(t["sparsity"], ".1%")]
        rows.append(row)
    return headers, rows


def _latency_blocks(i: int, path: Path, bench: dict, pngs: dict[str, bytes]) -> list[Block]:
    rows = bench["results"]
    device = (
        f"{bench.get('device', '?')} ({bench.get('device_name', '?')}), {bench.get('threads', '?')} threads"
    )
    blocks: list[Block] = [("p", f"{path.name}: {device}")]
    for batch in sorted({r["batch"] for r in rows}):
        at = [r for r in rows if r["batch"] == batch]
        file = f"latency_{i:02d}_{_slug(bench.get('device', 'x'))}_b{_slug(batch)}.png"
        pngs[file] = _latency_png(at, rows, f"{device}, batch {batch}")
        blocks.append(("img", file, f"latency, {device}, batch {batch}"))
        table = []
        for r in at:
            spread = f"{_fmt(_num(r.get('p25_ms')), '.1f')}–{_fmt(_num(r.get('p75_ms')), '.1f')}"
            table.append([str(r["name"]), str(batch), _fmt(_num(r["median_ms"]), ".1f"), spread])
            table[-1] += [_fmt(_num(r.get("tokens_per_s")), ".1f"), _fmt(_reduction(rows, r), ".1%")]
        headers = ["variant", "batch", "median ms", "p25–p75 ms", "tokens/s", "reduction"]
        blocks.append(("table", headers, table))
    return blocks


def _paper_blocks(splits: dict[str, dict], benches: list[tuple[Path, dict]]) -> list[Block]:
    headers = ["model", "split", "ΔWER rel.", "ΔWER abs.", "ΔBLEU", "latency reduction"]
    paper_time = f"ASR {-PAPER_ASR_TIME:.1%}, ST {-PAPER_ST_TIME:.1%}"
    rows = [["paper (50% decoder)", NA, f"{PAPER_ASR_WER:+.1%}", NA, "no loss", paper_time]]
    for split, ev in splits.items():
        dense = _dense(ev["models"])
        for m in _paper_models(ev["models"]):
            if dense is None:
                continue
            w, dw = _task_means(m, "transcribe")["wer"], _task_means(dense, "transcribe")["wer"]
            b, db = _task_means(m, "translate")["bleu"], _task_means(dense, "translate")["bleu"]
            lat = []
            for path, bench in benches:
                for r in bench["results"]:
                    if r["name"] == m["name"]:
                        red = _reduction(bench["results"], r)
                        lat.append(
                            f"{bench.get('device', '?')} b{r['batch']} {_fmt(red, '.1%')} ({path.name})"
                        )
            rel = (w - dw) / dw if dw else math.nan
            row = [str(m["name"]), split, _fmt(rel, "+.1%"), _fmt(w - dw, "+.3f"), _fmt(b - db, "+.1f")]
            rows.append([*row, "; ".join(lat) or "not benchmarked"])
    note = (
        "The paper reports, at 50% decoder sparsity, ASR −28.6% time with +2.8% WER and ST −34.3% time with "
        "no BLEU loss. Ours: context-aware, decoder only, 50% of decoder FLOPs. Our bench times a task mix, "
        "not ASR and ST apart."
    )
    return [("h", 2, "Beside the paper"), ("p", note), ("table", headers, rows)]


# ---------------------------------------------------------------- figures


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _pareto_png(models: list[dict], split: str) -> bytes:
    """Quality against executed GFLOPs; seeds faint, their mean solid, context points joined by target."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    for ax, task in zip(axes, TASKS, strict=True):
        metric = PRIMARY[task]
        series: dict[tuple, list[tuple[float, float, float]]] = defaultdict(list)
        labelled = set()
        for (kind, where, by, target), ms in _by_config(models).items():
            pts = [(_task_means(m, task)["gflops_total"], _task_means(m, task)[metric]) for m in ms]
            pts = [p for p in pts if not any(math.isnan(v) for v in p)]
            if not pts:
                continue
            style = {"marker": MARKERS.get(kind, "D"), "color": COLOURS.get(where, "tab:green")}
            if len(pts) > 1:
                ax.scatter(*zip(*pts, strict=True), alpha=0.25, s=25, **style)
            x, y = _mean([p[0] for p in pts]), _mean([p[1] for p in pts])
            label = kind if kind == "dense" else f"{kind} ({where}, by {by})"
            ax.scatter(
                x, y, s=140 if kind == "dense" else 50, label=None if label in labelled else label, **style
            )
            labelled.add(label)
            if target is not None:
                ax.annotate(f"{target:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
            series[(kind, where, by)].append((_num(target), x, y))
        for (kind, where, by), pts in series.items():
            if kind == "context" and len(pts) > 1:
                pts.sort()
                ax.plot(
                    [p[1] for p in pts],
                    [p[2] for p in pts],
                    color=COLOURS.get(where, "tab:green"),
                    linestyle="--" if by == "count" else "-",
                    linewidth=1,
                )
        better = "lower" if task == "transcribe" else "higher"
        ax.set(
            title=f"{task} ({split})",
            xlabel="executed GFLOPs per utterance (encoder+decoder)",
            ylabel=f"mean {metric.upper()} ({better} is better)",
        )
        ax.grid(alpha=0.3)
        if labelled:
            ax.legend(fontsize=8)
    return _png(fig)


def _keep_matrix(keep: dict[str, float]) -> np.ndarray:
    """Layers x GATE_COLUMNS; NaN where a layer has no such gate, so encoder and decoder share one grid."""
    parsed = []
    for name, value in keep.items():
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and (parts[0], parts[2]) in GATE_COLUMNS:
            parsed.append((int(parts[1]), GATE_COLUMNS.index((parts[0], parts[2])), _num(value)))
    matrix = np.full((max((p[0] for p in parsed), default=-1) + 1, len(GATE_COLUMNS)), np.nan)
    for layer, col, value in parsed:
        matrix[layer, col] = value
    return matrix


def _keep_png(model: dict, split: str) -> bytes:
    """One heatmap of keep rates per (task, language), colour scale fixed to 0..1."""
    groups = sorted(model["groups"].items())
    ncols = min(len(groups), 5) or 1
    nrows = math.ceil(len(groups) / ncols) or 1
    mats = [_keep_matrix(g.get("keep_rate") or {}) for _, g in groups]
    layers = max((m.shape[0] for m in mats), default=1) or 1
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.4 * ncols + 1.2, (0.3 * layers + 1.4) * nrows + 0.6), layout="constrained"
    )
    axes = np.atleast_1d(axes).ravel()
    cmap = plt.get_cmap("viridis").with_extremes(bad="#e8e8e8")
    image = None
    for ax, (key, _), mat in zip(axes, groups, mats, strict=False):
        image = ax.imshow(mat, vmin=0, vmax=1, cmap=cmap, aspect="auto", interpolation="nearest")
        ax.set_title(key, fontsize=9)
        ax.set_xticks(
            range(len(GATE_COLUMNS)), ["enc\nattn", "enc\nffn", "dec\nself", "dec\ncross", "dec\nffn"]
        )
        ax.set_yticks(range(mat.shape[0]))
        ax.set_ylabel("layer", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(groups)]), label="keep rate", shrink=0.9)
    fig.suptitle(f"{model['name']} ({model.get('kind')}), split {split}: keep rate per layer")
    return _png(fig)


def _latency_png(at: list[dict], rows: list[dict], title: str) -> bytes:
    """Median with p25–p75 whiskers, and each variant's reduction against dense at the same batch."""
    med = np.array([_num(r["median_ms"]) for r in at])
    lo = np.array([_num(r.get("p25_ms", r["median_ms"])) for r in at])
    hi = np.array([_num(r.get("p75_ms", r["median_ms"])) for r in at])
    err = np.nan_to_num(np.vstack([np.clip(med - lo, 0, None), np.clip(hi - med, 0, None)]))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(at) + 1.5), layout="constrained")
    y = np.arange(len(at))
    ax.barh(y, med, xerr=err, capsize=3, color=["grey" if r["name"] == "dense" else "tab:blue" for r in at])
    for i, r in enumerate(at):
        red = _reduction(rows, r)
        text = "dense" if r["name"] == "dense" else f"{_fmt(-red, '+.1%')} vs dense"
        ax.text(med[i] + err[1, i], i, f"  {text}", va="center", fontsize=8)
    ax.set_yticks(y, [str(r["name"]) for r in at])
    ax.invert_yaxis()
    ax.set_xlim(0, float(np.nanmax(med + err[1])) * 1.3 if len(at) else 1)
    ax.set(xlabel="median ms per batch (p25–p75)", title=title)
    return _png(fig)


# ---------------------------------------------------------------- rendering


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:.8em 0}
li{margin:.4em 0}.met{color:#08702a}.notmet{color:#b00020}.na{color:#777}
"""


def _verdict(met: bool | None) -> tuple[str, str]:
    return {True: ("MET", "met"), False: ("NOT MET", "notmet"), None: ("NOT MEASURED", "na")}[met]


def _render_html(title: str, blocks: list[Block], pngs: dict[str, bytes]) -> str:
    e = html.escape
    body = []
    for b in blocks:
        if b[0] == "h":
            body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            body.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode(pngs[b[1]]).decode()
            body.append(f'<img alt="{e(b[2])}" src="data:image/png;base64,{data}">')
        elif b[0] == "targets":
            items = []
            for t in b[1]:
                word, cls = _verdict(t["met"])
                items.append(f'<li><b class="{cls}">{word}</b> <b>{e(t["name"])}</b>: {e(t["detail"])}</li>')
            body.append("<ul>" + "".join(items) + "</ul>")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _render_md(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append(f"{'#' * b[1]} {b[2]}")
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "table":
            lines = ["| " + " | ".join(map(_md_cell, b[1])) + " |", "|" + "---|" * len(b[1])]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in b[2]]
            out.append("\n".join(lines))
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})")
        elif b[0] == "targets":
            out.append("\n".join(f"- **{_verdict(t['met'])[0]}** `{t['name']}`: {t['detail']}" for t in b[1]))
    return "\n\n".join(out) + "\n"
