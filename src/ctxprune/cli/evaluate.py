"""`ctxprune eval`, `bench`, `report` and `demo`: measure dense against gate sets and report it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ctxprune.cli.common import (
    AdapterOpt,
    BeamsOpt,
    DeviceOpt,
    DtypeOpt,
    Int8Opt,
    LoopGuardOpt,
    ModelOpt,
    ThreadsOpt,
    console,
    parse_device,
    parse_dtype,
    set_threads,
    user_errors,
)
from ctxprune.errors import CtxpruneError

if TYPE_CHECKING:
    from ctxprune.eval.suite import Candidate

GatesOpt = Annotated[
    list[Path] | None, typer.Option("--gates", help="Gate set dir (repeat for several; see artifacts/gates).")
]
CorpusOpt = Annotated[Path, typer.Option("--data", help="Corpus directory (`ctxprune data build`).")]
JsonOutOpt = Annotated[Path, typer.Option("--json", help="Where to write the results (JSON).")]


def pick_candidates(
    gates: list[Path] | None,
    adapter: Path | None,
    random: list[float] | None = None,
    random_where: str = "decoder",
    seeds: int = 0,
    dense: bool = True,
) -> tuple[list[Candidate], Path]:
    """Dense, then the gate sets, then the random baselines, all on Whisper base (or the given adapter:
    a gate set trained on one refuses to load without it)."""
    from ctxprune.eval.suite import Candidate
    from ctxprune.models.whisper import STACK_PREFIX

    if random_where not in STACK_PREFIX:
        raise CtxpruneError(f"--random-where must be one of {', '.join(STACK_PREFIX)}")
    out = [Candidate("dense", "dense")] if dense else []
    out += [Candidate.gate_set(Path(g)) for g in gates or []]
    out += [Candidate.random(r, random_where, s) for r in random or [] for s in range(seeds)]
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise CtxpruneError("two candidates share a name; give each gate set once")
    if not out:
        raise CtxpruneError("nothing to evaluate: give --gates or --random, or leave out --no-dense")
    return out, adapter


def eval_(
    data: CorpusOpt,
    json_out: JsonOutOpt,
    gates: GatesOpt = None,
    adapter: AdapterOpt = None,
    split: Annotated[str, typer.Option(help="train | dev | test | test_unseen_voice.")] = "test",
    random: Annotated[
        list[float] | None, typer.Option(help="Random (LayerDrop-style) baseline at this rate; repeatable.")
    ] = None,
    random_where: Annotated[str, typer.Option(help="Stack the random baseline drops from.")] = "decoder",
    seeds: Annotated[int, typer.Option(help="Seeds per random baseline.")] = 3,
    dense: Annotated[
        bool,
        typer.Option(help="Evaluate the dense reference too (leave out in all but one part of a split)."),
    ] = True,
    limit: Annotated[int | None, typer.Option(help="Rows per (task, language); default all.")] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(help="Only this task/language, e.g. transcribe/fr (repeatable); default all."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Utterances decoded together.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Decode length cap per utterance.")] = 224,
    beams: BeamsOpt = 1,
    loop_guard: LoopGuardOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    int8: Int8Opt = False,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Quality, executed GFLOPs, sparsity and keep rates per (task, language): dense against gate sets."""
    with user_errors():
        set_threads(threads)
        from rich.table import Table

        from ctxprune.eval.suite import eval_rows, evaluate_candidates, summarize
        from ctxprune.paths import write_json_atomic
        from ctxprune.progress import progress_bar
        from ctxprune.runtime.decoding import DecodeOptions
        from ctxprune.stack import StackSpec

        candidates, adapter = pick_candidates(gates, adapter, random, random_where, seeds, dense)
        rows = len(eval_rows(data, split, limit, group))
        with progress_bar() as bar:
            task = bar.add_task("eval", total=rows * len(candidates))
            record = evaluate_candidates(
                candidates,
                data,
                StackSpec(model, adapter, None, parse_device(device), parse_dtype(dtype), int8),
                split,
                limit,
                batch_size,
                DecodeOptions(beams=beams, max_new_tokens=max_new_tokens, loop_guard=loop_guard),
                on_progress=lambda n: bar.advance(task, n),
                on_candidate=lambda name: bar.update(task, description=f"eval {name}"),
                groups=group,
            )
        write_json_atomic(json_out, record.to_json())
        table = Table(title=f"{split}: {rows} rows per candidate")
        for column in ("candidate", "WER", "BLEU", "GFLOPs", "decoder GFLOPs", "sparsity"):
            table.add_column(column)
        for r in summarize(record):
            cells = [r["wer"], r["bleu"], r["gflops"], r["gflops_decoder"], r["sparsity"]]
            table.add_row(r["name"], *("-" if v is None else f"{v:.3f}" for v in cells))
        console.print(table)
        console.print(f"results written to {json_out}")


def bench(
    data: CorpusOpt,
    json_out: JsonOutOpt,
    gates: GatesOpt = None,
    adapter: AdapterOpt = None,
    split: Annotated[str, typer.Option(help="Split the inputs come from.")] = "test",
    batch: Annotated[
        list[int] | None, typer.Option(help="Batch sizes (repeatable); default 1 and 16.")
    ] = None,
    batch1_rows: Annotated[int, typer.Option(help="Utterances timed one at a time for batch 1.")] = 4,
    repeats: Annotated[int, typer.Option(help="Timed repeats per variant.")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up rounds.")] = 2,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    int8: Int8Opt = False,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    loop_guard: LoopGuardOpt = False,
) -> None:
    """Latency and throughput of the dense model against each gate set, interleaved, same inputs (with
    `--loop-guard`, as `transcribe` and `serve` decode: a looping row's dense re-decode is timed too)."""
    with user_errors():
        set_threads(threads)
        from rich.table import Table

        from ctxprune.eval.latency import bench_latency
        from ctxprune.paths import write_json_atomic
        from ctxprune.progress import progress_bar
        from ctxprune.runtime.decoding import DecodeOptions
        from ctxprune.stack import StackSpec

        candidates, adapter = pick_candidates(gates, adapter)
        sizes = tuple(batch or [1, 16])
        if any(b < 1 for b in sizes):
            raise CtxpruneError("--batch must be at least 1")
        with progress_bar() as bar:
            task = bar.add_task("bench", total=len(sizes) * (warmup + repeats) * len(candidates))
            record = bench_latency(
                candidates,
                data,
                StackSpec(model, adapter, None, parse_device(device), parse_dtype(dtype), int8),
                split,
                sizes,
                batch1_rows,
                repeats=repeats,
                warmup=warmup,
                options=DecodeOptions(loop_guard=loop_guard),
                on_step=lambda: bar.advance(task),
            )
        write_json_atomic(json_out, record.to_json())
        table = Table(title=f"latency on {record.device_name} ({record.threads} threads)")
        for column in ("variant", "batch", "median ms", "p25-p75 ms", "tokens/s", "vs dense"):
            table.add_column(column)
        for r in record.results:
            spread = f"{r.p25_ms:.0f}-{r.p75_ms:.0f}"
            change = "-" if r.reduction_vs_dense is None else f"{-r.reduction_vs_dense:+.1%}"
            table.add_row(r.name, str(r.batch), f"{r.median_ms:.0f}", spread, f"{r.tokens_per_s:.1f}", change)
        console.print(table)
        console.print(f"results written to {json_out}")


def report(
    results: Annotated[
        list[Path], typer.Argument(help="JSON files from `ctxprune eval` and `ctxprune bench`.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory for report.html, report.md and plots.")],
) -> None:
    """One self-contained HTML report (and Markdown with PNGs): savings, costs, what the gates learned."""
    with user_errors():
        from ctxprune.eval.report import build_report

        summary = build_report(results, out)
        for t in summary["targets"]:
            verdict = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
            console.print(f"{verdict:>12}  {t['name']}: {t['detail']}")
        console.print(f"report written to {out / 'report.html'}")


def demo(model: ModelOpt = None, threads: ThreadsOpt = None) -> None:
    """The main job: real speech through the real model, offline, with a summary."""
    with user_errors():
        set_threads(threads)
        from ctxprune.demo import run_demo, run_pruning_demo

        run_demo(console, model)
        report_path = run_pruning_demo(console, model)
        console.print(f"[bold]report:[/] {report_path}")
