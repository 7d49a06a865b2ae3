"""The `ctxprune` command line: a thin layer over the Python API.

One module per concept (`transcribe`, `serve`, `model`, `data`, `train`, and `evaluate` for eval, bench,
report and demo); `common` holds what they share. This module assembles them into one typer app, in the order
`--help` lists them.
"""

from __future__ import annotations

import typer

from ctxprune.cli import data, evaluate, model, serve, train, transcribe

app = typer.Typer(
    help="Context-aware dynamic pruning of speech foundation models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(model.app, name="model")
app.add_typer(train.app, name="train")
app.add_typer(data.app, name="data")
app.command()(transcribe.transcribe)
app.command()(serve.serve)
app.command("eval")(evaluate.eval_)
app.command()(evaluate.bench)
app.command()(evaluate.report)
app.command()(evaluate.demo)


def main() -> None:
    app(prog_name="ctxprune")
