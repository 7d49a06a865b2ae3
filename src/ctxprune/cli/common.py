"""What every command shares: the console, the user-error contract, and the options several commands take."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ctxprune.errors import CtxpruneError

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


ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Model dir or prepared hub id (default: prepared Whisper base).")
]
ThreadsOpt = Annotated[int | None, typer.Option(help="CPU threads for torch.")]
AdapterOpt = Annotated[
    Path | None,
    typer.Option(help="LoRA adapter dir, merged into the model (default: none, Whisper base)."),
]
Int8Opt = Annotated[bool, typer.Option("--int8", help="Dynamic int8 quantization of Linear layers (CPU).")]
BeamsOpt = Annotated[
    int, typer.Option(help="Beam search with this many beams (Whisper's length penalty); 1: greedy.")
]
LoopGuardOpt = Annotated[
    bool,
    typer.Option(
        help="Stop a greedy decoding that loops (3 copies of a block of up to 32 tokens, at least 24 "
        "tokens); a pruned row that looped is decoded again by the dense model, and the FLOPs count both."
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, or auto (cuda when present).")]
DtypeOpt = Annotated[str, typer.Option(help="fp32 | fp16 | bf16.")]
CudaGraphsOpt = Annotated[
    bool, typer.Option(help="On CUDA, decode through captured CUDA graphs (one per mask signature).")
]


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        if threads < 1:
            raise CtxpruneError("--threads must be at least 1")
        torch.set_num_threads(threads)


def parse_device(device: str) -> str:
    """--device as a torch device string; "auto" picks cuda when present."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CtxpruneError("--device cuda was asked for, but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise CtxpruneError(f"--device must be cpu, cuda or auto, got {device!r}")
    return device


def parse_dtype(name: str):
    """--dtype as a torch dtype."""
    import torch

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in dtypes:
        raise CtxpruneError(f"--dtype must be one of {', '.join(dtypes)}, got {name!r}")
    return dtypes[name]
