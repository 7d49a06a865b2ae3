"""Transcript writers: txt, vtt, srt, tsv and json files, named and formatted as openai-whisper's CLI
writes them (`whisper audio.mp3 --output_format srt --output_dir out` -> `out/audio.srt`), so that tools
that read Whisper's files read ours. Word-level options (highlighting, line widths) are not supported.
Each file is written atomically: to a temporary file in the output folder, then renamed over the target."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ctxprune.errors import CtxpruneError
from ctxprune.longform.segments import Transcript

OUTPUT_FORMATS = ("txt", "vtt", "srt", "tsv", "json")  # "all" stands for every one of them


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """`[HH:]MM:SS.mmm` as openai-whisper writes it; hours appear when asked for or when non-zero."""
    if seconds < 0:
        raise ValueError(f"non-negative timestamp expected, got {seconds}")
    hours, rest = divmod(round(seconds * 1000.0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1_000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _cues(transcript: Transcript, always_include_hours: bool, decimal_marker: str) -> Iterator[tuple]:
    for segment in transcript.segments:
        start = format_timestamp(segment.start, always_include_hours, decimal_marker)
        end = format_timestamp(segment.end, always_include_hours, decimal_marker)
        yield start, end, segment.text.strip().replace("-->", "->")


def format_txt(transcript: Transcript) -> str:
    return "".join(f"{segment.text.strip()}\n" for segment in transcript.segments)


def format_vtt(transcript: Transcript) -> str:
    cues = _cues(transcript, always_include_hours=False, decimal_marker=".")
    return "WEBVTT\n\n" + "".join(f"{start} --> {end}\n{text}\n\n" for start, end, text in cues)


def format_srt(transcript: Transcript) -> str:
    cues = _cues(transcript, always_include_hours=True, decimal_marker=",")
    return "".join(f"{i}\n{start} --> {end}\n{text}\n\n" for i, (start, end, text) in enumerate(cues, 1))


def format_tsv(transcript: Transcript) -> str:
    """Start and end in integer milliseconds, so no locale can turn a decimal point into a comma."""
    rows = ["start\tend\ttext\n"]
    for segment in transcript.segments:
        text = segment.text.strip().replace("\t", " ")
        rows.append(f"{round(1000 * segment.start)}\t{round(1000 * segment.end)}\t{text}\n")
    return "".join(rows)


def format_json(transcript: Transcript) -> str:
    return json.dumps(transcript.to_json(), ensure_ascii=False)


_FORMATTERS: dict[str, Callable[[Transcript], str]] = {
    "txt": format_txt,
    "vtt": format_vtt,
    "srt": format_srt,
    "tsv": format_tsv,
    "json": format_json,
}


def check_formats(spec: str) -> tuple[str, ...]:
    """Parse `--output-format`: one format, a comma-separated list, or `all`; in order, without repeats."""
    formats: list[str] = []
    for name in (part.strip().lower() for part in spec.split(",")):
        chosen = OUTPUT_FORMATS if name == "all" else (name,)
        if name not in _FORMATTERS and name != "all":
            raise CtxpruneError(
                f"unknown output format {name!r} in {spec!r}; use one or more of "
                f"{', '.join(OUTPUT_FORMATS)} separated by commas, or 'all'"
            )
        formats.extend(f for f in chosen if f not in formats)
    return tuple(formats)


def output_path(audio_path: str | Path, output_dir: Path, fmt: str) -> Path:
    """`<output_dir>/<audio file name without its extension>.<fmt>`, as openai-whisper names it."""
    stem = os.path.splitext(os.path.basename(audio_path))[0]
    return Path(output_dir) / f"{stem}.{fmt}"


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the permissions, as a plain open() would
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_transcript(transcript: Transcript, formats: Sequence[str], output_dir: Path) -> list[Path]:
    """Write `transcript` in each of `formats` (names from `check_formats`) under `output_dir`, which is
    created if missing; return the paths written, in the order of `formats`."""
    unknown = [fmt for fmt in formats if fmt not in _FORMATTERS]
    if unknown:
        raise CtxpruneError(f"unknown output format(s) {', '.join(unknown)}; use {', '.join(OUTPUT_FORMATS)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = output_path(transcript.path, output_dir, fmt)
        _write_atomically(path, _FORMATTERS[fmt](transcript))
        paths.append(path)
    return paths
