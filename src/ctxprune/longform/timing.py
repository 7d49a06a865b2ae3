"""Segment times moved onto the speech that VAD hears.

Whisper places its 0.02 s timestamp tokens loosely: a segment's end often runs on through the pause after
the speech, up to where the next segment starts, so a subtitle stays on screen over silence. VAD knows
where speech is to about 30 ms; clamping each segment to the speech it overlaps keeps Whisper's split
into segments and their text, and moves only their edges (as faster-whisper and WhisperX lean on VAD for
their timings).
"""

from __future__ import annotations

from ctxprune.data.audio import SAMPLE_RATE
from ctxprune.longform.segments import Segment

MIN_OVERLAP = 0.25  # seconds: an edge that only grazes the next speech (Whisper's ends do) is not in it


def snap_to_speech(segments: list[Segment], regions: list[tuple[int, int]]) -> None:
    """Clamp each segment (in place) to the first and last speech region (sample offsets) it overlaps by
    at least `MIN_OVERLAP` (or wholly); a segment over no speech keeps its times."""
    spans = [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in sorted(regions)]
    for seg in segments:
        inside = [(a, b) for a, b in spans if min(b, seg.end) - max(a, seg.start) >= min(MIN_OVERLAP, b - a)]
        if not inside:
            continue
        start, end = max(seg.start, inside[0][0]), min(seg.end, inside[-1][1])
        if start < end:
            seg.start, seg.end = round(start, 3), round(end, 3)
