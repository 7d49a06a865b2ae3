"""The report's figures as PNG bytes: quality against executed compute, keep-rate heatmaps, latency bars.

Drawn with matplotlib's Agg backend, so no display is needed and the bytes can be inlined into HTML.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ctxprune.eval.measures import PRIMARY, by_config, fmt, mean, num, reduction, task_means  # noqa: E402
from ctxprune.eval.records import BenchResult, CandidateResult  # noqa: E402
from ctxprune.models.whisper_tokens import TASKS  # noqa: E402

MARKERS = {"dense": "*", "context": "o", "static": "s", "random": "x"}
PALETTE = plt.get_cmap("tab10").colors  # a colour per (where, weighting, variant); the marker: the kind
GATE_COLUMNS = [("enc", "attn"), ("enc", "ffn"), ("dec", "self_attn"), ("dec", "cross_attn"), ("dec", "ffn")]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _colour(colours: dict[tuple, str], key: tuple) -> str:
    """The next palette colour for a configuration not seen yet, the same one after."""
    return colours.setdefault(key, PALETTE[len(colours) % len(PALETTE)])


def pareto_png(models: list[CandidateResult], split: str) -> bytes:
    """Quality against executed GFLOPs; seeds faint, their mean solid, context points joined by target."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    colours: dict[tuple, str] = {}  # shared, so that a configuration has one colour in both plots
    for ax, task in zip(axes, TASKS, strict=True):
        metric = PRIMARY[task]
        series: dict[tuple, list[tuple[float, float, float]]] = defaultdict(list)
        for (kind, where, by, target, variant), ms in by_config(models).items():
            pts = [(task_means(m, task)["gflops_total"], task_means(m, task)[metric]) for m in ms]
            pts = [p for p in pts if not any(math.isnan(v) for v in p)]
            if not pts:
                continue
            colour = "black" if kind == "dense" else _colour(colours, (where, by, variant))
            style = {"marker": MARKERS.get(kind, "D"), "color": colour}
            if len(pts) > 1:
                ax.scatter(*zip(*pts, strict=True), alpha=0.25, s=25, **style)
            x, y = mean([p[0] for p in pts]), mean([p[1] for p in pts])
            extra = f", {variant}" if variant else ""
            label = kind if kind == "dense" else f"{kind} ({where}, by {by}{extra})"
            ax.scatter(x, y, s=140 if kind == "dense" else 50, label=label, **style)
            if target is not None:
                ax.annotate(f"{target:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
            series[(kind, where, by, variant)].append((num(target), x, y))
        for (kind, where, by, variant), pts in series.items():
            if kind == "context" and len(pts) > 1:
                pts.sort()
                ax.plot(
                    [p[1] for p in pts],
                    [p[2] for p in pts],
                    color=_colour(colours, (where, by, variant)),
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
    legend = {}  # one legend under both plots, so that it hides no point
    for ax in axes:
        legend |= dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=2, fontsize=8)
    return _png(fig)


def _keep_matrix(keep: dict[str, float]) -> np.ndarray:
    """Layers x GATE_COLUMNS; NaN where a layer has no such gate, so encoder and decoder share one grid."""
    parsed = []
    for name, value in keep.items():
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and (parts[0], parts[2]) in GATE_COLUMNS:
            parsed.append((int(parts[1]), GATE_COLUMNS.index((parts[0], parts[2])), num(value)))
    matrix = np.full((max((p[0] for p in parsed), default=-1) + 1, len(GATE_COLUMNS)), np.nan)
    for layer, col, value in parsed:
        matrix[layer, col] = value
    return matrix


def keep_png(model: CandidateResult, split: str) -> bytes:
    """One heatmap of keep rates per (task, language), colour scale fixed to 0..1."""
    groups = sorted(model.groups.items())
    ncols = min(len(groups), 5) or 1
    nrows = math.ceil(len(groups) / ncols) or 1
    mats = [_keep_matrix(g.keep_rate or {}) for _, g in groups]
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
    fig.suptitle(f"{model.name} ({model.kind}), split {split}: keep rate per layer")
    return _png(fig)


def latency_png(at: list[BenchResult], rows: list[BenchResult], title: str) -> bytes:
    """Median with p25–p75 whiskers, and each variant's reduction against dense at the same batch."""
    med = np.array([num(r.median_ms) for r in at])
    lo = np.array([num(r.p25_ms if r.p25_ms is not None else r.median_ms) for r in at])
    hi = np.array([num(r.p75_ms if r.p75_ms is not None else r.median_ms) for r in at])
    err = np.nan_to_num(np.vstack([np.clip(med - lo, 0, None), np.clip(hi - med, 0, None)]))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(at) + 1.5), layout="constrained")
    y = np.arange(len(at))
    ax.barh(y, med, xerr=err, capsize=3, color=["grey" if r.name == "dense" else "tab:blue" for r in at])
    for i, r in enumerate(at):
        red = reduction(rows, r)
        text = "dense" if r.name == "dense" else f"{fmt(-red, '+.1%')} vs dense"
        ax.text(med[i] + err[1, i], i, f"  {text}", va="center", fontsize=8)
    ax.set_yticks(y, [str(r.name) for r in at])
    ax.invert_yaxis()
    ax.set_xlim(0, float(np.nanmax(med + err[1])) * 1.3 if len(at) else 1)
    ax.set(xlabel="median ms per batch (p25–p75)", title=title)
    return _png(fig)
