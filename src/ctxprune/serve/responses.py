"""A finished request in the `response_format` the client asked for: OpenAI's json, text, srt, vtt and
verbose_json; verbose_json adds, per segment, the modules that ran and the window's FLOPs share, and for
the request a `ctxprune` record (model, FLOPs share, how often each module ran, latency)."""

from __future__ import annotations

from fastapi.responses import JSONResponse, PlainTextResponse, Response
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from ctxprune.longform.decoder import Job
from ctxprune.longform.segments import Transcript
from ctxprune.longform.writers import format_srt, format_vtt

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


def usage(job: Job, names: tuple[str, ...]) -> dict:
    """What the request's windows ran: the FLOPs share (executed against dense, silent windows too) and
    per module the share of windows it ran in."""
    windows = job.windows
    executed, dense = sum(w.flops[0] for w in windows), sum(w.flops[1] for w in windows)
    ran = [sum(w.keep[i] for w in windows) / len(windows) if windows else 0.0 for i in range(len(names))]
    return {
        "windows": len(windows),
        "flops_executed_share": round(executed / dense, 4) if dense else 1.0,
        "gflops_executed": round(executed / 1e9, 3),
        "gflops_dense": round(dense / 1e9, 3),
        "modules": list(names),
        "module_ran_share": [round(r, 4) for r in ran],
    }


def render(fmt: str, transcript: Transcript, extra: dict) -> Response:
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(format_srt(transcript))
    if fmt == "vtt":
        return PlainTextResponse(format_vtt(transcript), media_type="text/vtt")
    if fmt == "json":
        return JSONResponse({"text": transcript.text})
    segments = []
    for s in transcript.segments:
        record = s.to_json()
        record.pop("language", None)
        segments.append(record)
    code = transcript.language or ""
    body = {
        "task": transcript.task,
        "language": LANGUAGES.get(code, code),
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": segments,
        "ctxprune": extra,
    }
    return JSONResponse(body)
