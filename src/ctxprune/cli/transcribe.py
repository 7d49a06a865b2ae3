"""`ctxprune transcribe`: audio files to text through the Python API (`transcriber.Transcriber`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ctxprune.cli.common import (
    AdapterOpt,
    BeamsOpt,
    DeviceOpt,
    DtypeOpt,
    Int8Opt,
    ModelOpt,
    ThreadsOpt,
    parse_device,
    parse_dtype,
    set_threads,
    user_errors,
)


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
        set_threads(threads)
        from ctxprune.progress import progress_bar
        from ctxprune.runtime.decoding import DecodeOptions
        from ctxprune.stack import StackSpec
        from ctxprune.transcriber import Transcriber

        spec = StackSpec(model, adapter, gates, parse_device(device), parse_dtype(dtype), int8)
        options = DecodeOptions(beams=beams, path="auto" if cuda_graphs else "gather")
        transcriber = Transcriber(spec, options)
        transcriber.check_request(task, language)  # before any audio is read
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
