"""`ctxprune transcribe`: audio files of any length to timed text and subtitles, through the Python API
(`transcriber.Transcriber`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from ctxprune.cli.common import (
    AdapterOpt,
    BeamsOpt,
    CudaGraphsOpt,
    DeviceOpt,
    DtypeOpt,
    Int8Opt,
    LoopGuardOpt,
    ModelOpt,
    ThreadsOpt,
    parse_device,
    parse_dtype,
    set_threads,
    user_errors,
)


def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files of any length: wav, flac, ogg or mp3.")],
    task: Annotated[str, typer.Option(help="transcribe | translate (to English).")] = "transcribe",
    language: Annotated[str, typer.Option(help="Language code (en, de, …) or 'auto'.")] = "auto",
    detect_language: Annotated[
        str, typer.Option(help="With --language auto: detect once per 'file' (first window) or per 'window'.")
    ] = "file",
    vad: Annotated[
        bool, typer.Option(help="Silero VAD cuts speech into windows of at most 30 s, decoded as one batch.")
    ] = False,
    snap_to_speech: Annotated[
        bool, typer.Option(help="Move segment edges onto the speech Silero VAD hears (subtitle timing).")
    ] = True,
    output_format: Annotated[
        str | None,
        typer.Option(help="Write files: txt, vtt, srt, tsv, json, several comma-separated, or all."),
    ] = None,
    output_dir: Annotated[Path, typer.Option(help="Where --output-format writes <audio name>.<ext>.")] = Path(
        "."
    ),
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per file on stdout.")] = False,
    batch_size: Annotated[int, typer.Option(help="30 s windows decoded together (across files).")] = 8,
    fallback: Annotated[
        bool, typer.Option(help="Decode a bad window again at higher temperatures (0.2 … 1.0), as Whisper.")
    ] = True,
    timestamps: Annotated[
        bool,
        typer.Option(help="Decode timestamp tokens; --no-timestamps: one segment per 30 s or VAD window."),
    ] = True,
    condition_on_previous_text: Annotated[
        bool, typer.Option(help="Prompt each window with the text before it (sequential path).")
    ] = False,
    no_speech_threshold: Annotated[
        float,
        typer.Option(help="Skip a window whose no-speech probability is above this (log-prob low too)."),
    ] = 0.6,
    gates: Annotated[
        Path | None, typer.Option(help="Gate set dir: every window is pruned by its own context.")
    ] = None,
    adapter: AdapterOpt = None,
    beams: BeamsOpt = 1,
    loop_guard: LoopGuardOpt = True,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    cuda_graphs: CudaGraphsOpt = True,
    int8: Int8Opt = False,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Transcribe or translate audio files of any length with timestamps (Whisper's long-form algorithm,
    or VAD-batched windows), optionally pruned by a gate set; print the text or write subtitles."""
    with user_errors():
        set_threads(threads)
        from ctxprune.errors import CtxpruneError
        from ctxprune.longform.decoder import LongFormOptions
        from ctxprune.longform.writers import check_formats, write_transcript
        from ctxprune.progress import progress_bar, stderr
        from ctxprune.runtime.decoding import DecodeOptions
        from ctxprune.stack import StackSpec
        from ctxprune.transcriber import Transcriber, audio_seconds

        formats = check_formats(output_format) if output_format else ()
        if detect_language not in ("file", "window"):
            raise CtxpruneError(f"--detect-language must be 'file' or 'window', got {detect_language!r}")
        long_form = LongFormOptions(
            temperatures=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if fallback else (0.0,),
            no_speech_threshold=no_speech_threshold,
            condition_on_previous_text=condition_on_previous_text,
            language_per_window=detect_language == "window",
            timestamps=timestamps,
        )
        spec = StackSpec(model, adapter, gates, parse_device(device), parse_dtype(dtype), int8)
        options = DecodeOptions(
            beams=beams, path="auto" if cuda_graphs else "gather", loop_guard=loop_guard and beams == 1
        )
        transcriber = Transcriber(spec, options, long_form)
        transcriber.check_request(task, language)  # before any audio is read
        total = audio_seconds(audio)
        started = time.perf_counter()
        with progress_bar() as bar:
            bar_task = bar.add_task("seconds of audio", total=round(total))
            results = transcriber.transcribe(
                audio,
                task,
                language,
                batch_size,
                vad,
                snap=snap_to_speech,
                on_progress=lambda s: bar.advance(bar_task, s),
            )
        seconds = time.perf_counter() - started
        for r in results:
            if r.error:
                typer.echo(f"error: {r.error}", err=True)
                continue
            if r.note:
                typer.echo(f"note: {r.path}: {r.note}", err=True)
            if formats:
                for path in write_transcript(r, formats, output_dir):
                    typer.echo(f"wrote {path}", err=True)
            elif as_json:
                typer.echo(json.dumps(r.to_json(), ensure_ascii=False))
            else:
                typer.echo(f"{r.path}: {r.text}" if len(results) > 1 else r.text)
        done = [r for r in results if not r.error]
        audio_s = sum(r.duration for r in done)
        if done and seconds > 0:
            stderr.print(
                f"{len(done)} file(s), {audio_s / 60:.1f} min of audio in {seconds:.1f} s "
                f"({audio_s / seconds:.1f}x real time)"
            )
        failed = len(results) - len(done)
        if failed:
            typer.echo(f"{failed} of {len(results)} files failed", err=True)
            raise typer.Exit(1)
