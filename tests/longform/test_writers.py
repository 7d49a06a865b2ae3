"""The writers produce openai-whisper's CLI files: names, byte formats, and files that parsers accept."""

from __future__ import annotations

import csv
import json
from datetime import timedelta
from pathlib import Path

import pytest
import srt
import webvtt

from ctxprune.errors import CtxpruneError
from ctxprune.longform.segments import Segment, Transcript
from ctxprune.longform.writers import (
    OUTPUT_FORMATS,
    check_formats,
    format_timestamp,
    write_transcript,
)

TIMES = [(0.0, 2.5), (2.5, 61.234), (3600.0, 3725.0015)]
TEXTS = [" Hello world.", " Grüße aus Köln --> ça va? 日本語", " Past the first hour."]


def _segment(i: int, start: float, end: float, text: str, **extra) -> Segment:
    return Segment(
        id=i, seek=int(start * 100), start=start, end=end, text=text, tokens=[50364, 100 + i],
        temperature=0.0, avg_logprob=-0.25, compression_ratio=1.1, no_speech_prob=0.01, **extra,
    )  # fmt: skip


@pytest.fixture
def transcript() -> Transcript:
    segments = [_segment(i, s, e, t) for i, ((s, e), t) in enumerate(zip(TIMES, TEXTS, strict=True))]
    segments[1].gates = {"ran": ["enc.0", "dec.1"], "flops_executed_share": 0.5}
    segments[2].language = "en"
    return Transcript(
        path="/audio/talk.final.mp3", text="".join(TEXTS), segments=segments, language="de", duration=3726.0
    )


def _expected_text(text: str) -> str:
    return text.strip().replace("-->", "->")


def test_format_timestamp():
    assert format_timestamp(0.0) == "00:00.000"
    assert format_timestamp(61.234) == "01:01.234"
    assert format_timestamp(3725.0015) == "01:02:05.002"
    assert format_timestamp(1.5, always_include_hours=True, decimal_marker=",") == "00:00:01,500"
    with pytest.raises(ValueError):
        format_timestamp(-1.0)


def test_small_srt_and_vtt_exact(tmp_path: Path):
    small = Transcript(
        path="a.wav", segments=[_segment(0, 0.0, 1.5, " Hi -->there "), _segment(1, 3601, 3602, "x")]
    )
    srt_path, vtt_path = write_transcript(small, ["srt", "vtt"], tmp_path)
    assert srt_path.read_bytes() == (
        b"1\n00:00:00,000 --> 00:00:01,500\nHi ->there\n\n2\n01:00:01,000 --> 01:00:02,000\nx\n\n"
    )
    assert vtt_path.read_bytes() == (
        b"WEBVTT\n\n00:00.000 --> 00:01.500\nHi ->there\n\n01:00:01.000 --> 01:00:02.000\nx\n\n"
    )


def test_srt_parses(transcript: Transcript, tmp_path: Path):
    (path,) = write_transcript(transcript, ["srt"], tmp_path)
    subs = list(srt.parse(path.read_text(encoding="utf-8")))
    assert [s.index for s in subs] == [1, 2, 3]
    assert [(s.start, s.end) for s in subs] == [
        (timedelta(milliseconds=round(a * 1000)), timedelta(milliseconds=round(b * 1000))) for a, b in TIMES
    ]
    assert [s.content for s in subs] == [_expected_text(t) for t in TEXTS]


def test_vtt_parses(transcript: Transcript, tmp_path: Path):
    (path,) = write_transcript(transcript, ["vtt"], tmp_path)
    captions = webvtt.read(str(path)).captions
    assert [(c.start_in_seconds, c.end_in_seconds) for c in captions] == [(0, 2), (2, 61), (3600, 3725)]
    assert [(c.start, c.end) for c in captions] == [
        ("00:00:00.000", "00:00:02.500"),
        ("00:00:02.500", "00:01:01.234"),
        ("01:00:00.000", "01:02:05.002"),
    ]
    assert [c.text for c in captions] == [_expected_text(t) for t in TEXTS]


def test_tsv_rows(transcript: Transcript, tmp_path: Path):
    (path,) = write_transcript(transcript, ["tsv"], tmp_path)
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["start", "end", "text"]
    assert [(int(a), int(b)) for a, b, _ in rows[1:]] == [(0, 2500), (2500, 61234), (3600000, 3725002)]
    assert [text for _, _, text in rows[1:]] == [t.strip() for t in TEXTS]  # tsv keeps "-->"


def test_txt_lines(transcript: Transcript, tmp_path: Path):
    (path,) = write_transcript(transcript, ["txt"], tmp_path)
    assert path.read_text(encoding="utf-8") == "".join(t.strip() + "\n" for t in TEXTS)


def test_json_round_trips(transcript: Transcript, tmp_path: Path):
    (path,) = write_transcript(transcript, ["json"], tmp_path)
    assert "Grüße" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    with path.open(encoding="utf-8") as file:
        record = json.load(file)
    assert record == transcript.to_json()
    first, second, third = record["segments"]
    assert set(first) == {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                          "compression_ratio", "no_speech_prob"}  # fmt: skip
    assert second["gates"] == {"ran": ["enc.0", "dec.1"], "flops_executed_share": 0.5}
    assert third["language"] == "en" and record["language"] == "de"


def test_all_writes_five_files_named_after_audio(transcript: Transcript, tmp_path: Path):
    out = tmp_path / "nested" / "out"
    paths = write_transcript(transcript, check_formats("all"), out)
    assert paths == [out / f"talk.final.{fmt}" for fmt in OUTPUT_FORMATS]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp files left


def test_check_formats():
    assert check_formats("srt") == ("srt",)
    assert check_formats(" SRT, vtt,srt ") == ("srt", "vtt")
    assert check_formats("json,all") == ("json", "txt", "vtt", "srt", "tsv")
    with pytest.raises(CtxpruneError, match="txt, vtt, srt, tsv, json") as info:
        check_formats("srt,docx")
    assert "\n" not in str(info.value) and "docx" in str(info.value)
    with pytest.raises(CtxpruneError):
        write_transcript(Transcript(path="a.wav"), ["docx"], Path("unused"))


def test_atomic_overwrite_and_failure_leave_no_temp_files(
    transcript: Transcript, tmp_path: Path, monkeypatch
):
    (path,) = write_transcript(transcript, ["txt"], tmp_path)
    write_transcript(transcript, ["txt"], tmp_path)  # overwrite in place
    assert list(tmp_path.iterdir()) == [path]

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("ctxprune.longform.writers.os.replace", fail)
    before = path.read_bytes()
    with pytest.raises(OSError, match="disk full"):
        write_transcript(Transcript(path=str(path), segments=[_segment(0, 0, 1, "new")]), ["txt"], tmp_path)
    assert list(tmp_path.iterdir()) == [path] and path.read_bytes() == before
