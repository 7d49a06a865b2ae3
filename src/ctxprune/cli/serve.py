"""`ctxprune serve`: OpenAI's audio API, a web page, `/health` and `/metrics` over the Python API
(`serve.api.create_app`), on uvicorn in this process or on Ray Serve replicas (`--ray`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ctxprune.cli.common import (
    AdapterOpt,
    BeamsOpt,
    CudaGraphsOpt,
    DeviceOpt,
    DtypeOpt,
    LoopGuardOpt,
    ModelOpt,
    ThreadsOpt,
    parse_device,
    parse_dtype,
    set_threads,
    user_errors,
)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    gates: Annotated[
        list[Path] | None,
        typer.Option(
            help="Gate set dir served as a model named after it (repeat; default: artifacts/gates)."
        ),
    ] = None,
    batching: Annotated[
        str, typer.Option(help="static | continuous (join at window boundaries) | grouped (by context).")
    ] = "continuous",
    max_batch: Annotated[int, typer.Option(help="30 s windows decoded together.")] = 16,
    max_wait_ms: Annotated[float, typer.Option(help="How long a new batch waits for more requests.")] = 10.0,
    max_queue: Annotated[
        int, typer.Option(help="Requests waiting for a batch; more are refused (429).")
    ] = 64,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload (413 above).")] = 25.0,
    max_audio_s: Annotated[float, typer.Option(help="Longest audio in seconds (413 above).")] = 7200.0,
    timeout_s: Annotated[
        float, typer.Option(help="Per request, from arrival to answer (504 after).")
    ] = 600.0,
    snap_to_speech: Annotated[
        bool, typer.Option(help="Move segment edges onto the speech Silero VAD hears (subtitle timing).")
    ] = True,
    ray: Annotated[
        bool, typer.Option("--ray", help="Serve through Ray Serve replicas (@serve.batch).")
    ] = False,
    replicas: Annotated[int, typer.Option(help="With --ray: model replicas (one GPU each on CUDA).")] = 1,
    adapter: AdapterOpt = None,
    beams: BeamsOpt = 1,
    loop_guard: LoopGuardOpt = True,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    cuda_graphs: CudaGraphsOpt = True,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Serve transcription and translation with OpenAI's audio API (POST /v1/audio/transcriptions and
    /v1/audio/translations, GET /v1/models), batching requests by mask; a web page at /, /health and
    Prometheus /metrics. `model` in a request is `dense` or a gate set's name."""
    with user_errors():
        set_threads(threads)
        from ctxprune.errors import CtxpruneError
        from ctxprune.runtime.decoding import DecodeOptions
        from ctxprune.serve.api import Limits
        from ctxprune.serve.models import shipped_gate_sets
        from ctxprune.serve.run import ServeConfig, run_server
        from ctxprune.serve.scheduler import BatchingOptions
        from ctxprune.stack import StackSpec

        if ray and replicas < 1:
            raise CtxpruneError("--replicas must be at least 1")
        config = ServeConfig(
            gate_sets=list(gates) if gates else shipped_gate_sets(),
            spec=StackSpec(model, adapter, None, parse_device(device), parse_dtype(dtype)),
            decode=DecodeOptions(
                beams=beams, path="auto" if cuda_graphs else "gather", loop_guard=loop_guard and beams == 1
            ),
            batching=BatchingOptions(batching, max_batch, max_wait_ms / 1000, max_queue),
            limits=Limits(max_upload_mb, max_audio_s, timeout_s, snap_to_speech),
            replicas=replicas if ray else 0,
        )
        run_server(config, host, port)
