"""`ctxprune train`: LoRA adaptation and gate predictors, configured from YAML and flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ctxprune.cli.common import ModelOpt, console, user_errors
from ctxprune.errors import CtxpruneError

app = typer.Typer(help="Training: LoRA adaptation and gate predictors.", no_args_is_help=True)


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


@app.command("adapt")
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


@app.command("gates")
def train_gates(
    target: Annotated[float | None, typer.Option(help="Target sparsity in [0, 1].")] = None,
    where: Annotated[str | None, typer.Option(help="encoder | decoder | both.")] = None,
    sparsity_by: Annotated[
        str | None,
        typer.Option(help="flops | count | latency (each gate's measured time at batch 1 on this device)."),
    ] = None,
    encoder_target: Annotated[
        float | None, typer.Option(help="With --where both: the encoder's own target (--target: decoder's).")
    ] = None,
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
    """Train a gate predictor toward a target sparsity, distilling from the dense model (Whisper base, or
    base with --adapter); label the corpus first with `ctxprune data pseudo-label`."""
    with user_errors():
        ctx = None if context is None else [c for c in context.split(",") if c.strip() and c != "none"]
        values = {
            "target": target,
            "where": where,
            "sparsity_by": sparsity_by,
            "encoder_target": encoder_target,
            "context": ctx,
            "adapter": adapter,
            "start_from": start_from,
        }
        values |= {"data": data, "out": out, "steps": steps, "batch_size": batch_size, "model": model}
        _train("gates", config, values, set_, resume)
