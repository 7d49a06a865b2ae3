"""A transcript's segments and the transcript itself, with openai-whisper's field names, so that its
writers and its JSON read the same."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Segment:
    """One timed piece of a transcript. `seek` is the window's offset in log-mel frames (10 ms), as in
    openai-whisper; `gates` (pruned runs only) holds the modules that ran for the window the segment came
    from and that window's share of dense FLOPs."""

    id: int
    seek: int
    start: float  # seconds from the start of the file
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    language: str | None = None  # the window's language, when it was detected per window
    # {"ran": [...], "flops_executed_share": float}, and "decoded_by": "dense teacher" after a loop
    gates: dict | None = None

    def to_json(self) -> dict:
        record = asdict(self)
        for key in ("language", "gates"):
            if record[key] is None:
                record.pop(key)
        return record


@dataclass
class Transcript:
    """What `ctxprune transcribe` returns for one file (openai-whisper's result: text, segments,
    language), with the path, the timing and, for a file that failed, the error instead."""

    path: str
    text: str = ""
    segments: list[Segment] = field(default_factory=list)
    language: str | None = None
    task: str = "transcribe"
    duration: float = 0.0  # seconds of audio
    seconds: float = 0.0  # seconds spent on it
    note: str | None = None  # e.g. "no speech found"
    error: str | None = None

    def to_json(self) -> dict:
        record = {
            "path": self.path,
            "text": self.text,
            "segments": [s.to_json() for s in self.segments],
            "language": self.language,
            "task": self.task,
            "duration": self.duration,
            "seconds": self.seconds,
        }
        for key in ("note", "error"):
            if getattr(self, key) is not None:
                record[key] = getattr(self, key)
        return record


TIME_PRECISION = 0.02  # seconds per timestamp token
FRAMES_PER_TIMESTAMP = 2  # log-mel frames (10 ms) per timestamp step: the encoder's stride


@dataclass
class Piece:
    """Segments cut from one decoded window, before texts and ids: (start, end, tokens) in seconds, and
    how many frames the window's seek moves on."""

    spans: list[tuple[float, float, list[int]]]
    advance: int


def split_window(tokens: list[int], begin: int, offset: float, window_frames: int) -> Piece:
    """Cut a window's tokens (timestamps included, end-of-text not) into segments at each pair of
    consecutive timestamps, as HF's long-form `generate` (`_retrieve_segment`) and openai-whisper do.

    A window that ends on a lone timestamp was finished: the seek moves past the whole window. Otherwise
    the text after the last pair is unfinished: it is dropped and the seek moves to the last pair, to be
    decoded again at the start of the next window. With no pair at all the window is one segment."""
    is_ts = [t >= begin for t in tokens]
    single_ending = is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if not cuts:
        end_pos = int(window_frames * 0.01 / TIME_PRECISION)  # HF's float expression, truncated
        stamps = [t for t in tokens if t >= begin]
        if stamps and stamps[-1] != begin:
            end_pos = stamps[-1] - begin
        return Piece([(offset, offset + end_pos * TIME_PRECISION, tokens)], window_frames)
    if single_ending:
        cuts.append(len(tokens))
    else:
        cuts[-1] += 1  # the last segment keeps its closing pair
    spans, last = [], 0
    for i, cut in enumerate(cuts):
        piece = tokens[last:cut]
        end_index = -2 if i == len(cuts) - 1 and not single_ending else -1
        start = offset + (piece[0] - begin) * TIME_PRECISION
        spans.append((start, offset + (piece[end_index] - begin) * TIME_PRECISION, piece))
        last = cut
    if single_ending:
        return Piece(spans, window_frames)
    return Piece(spans, (tokens[last - 2] - begin) * FRAMES_PER_TIMESTAMP)
