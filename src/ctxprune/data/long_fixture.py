"""A long recording built on this machine, with its reference text and true utterance boundaries: the
fixture and bench input for long-form transcription (sequential 30 s decoding, timestamps, subtitles, VAD).

Debian ships no long public recording, so one is assembled: `en` (about 3.5 min) interleaves the five real
LibriVox clips of `pocketsphinx-testdata` with English sentences (gettext sentences and the corpus templates
with numbers) from several synthetic speakers; `multi` (about 3 min) has one 25-40 s block per language (en,
de, es, fr, it), several voices each, for per-window language detection. Seeded silences of 0.3-3 s (and in
`en` two pauses of 4-8 s, real gaps for VAD and timestamps) lie over a -60 dBFS noise floor: quiet, not
digital silence. Each clip is trimmed to where its envelope is within 40 dB of its loudest 10 ms, so the
stored boundaries are the samples where speech starts and ends. A reference is the sentence the voice was
given, as in the corpus (numbers as the templates write them; Whisper's normalizer reconciles the forms).
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ctxprune.data import voices
from ctxprune.data.audio import SAMPLE_RATE, load_audio
from ctxprune.data.gettext_pairs import catalogs_digest, read_pairs
from ctxprune.errors import CtxpruneError
from ctxprune.eval.librivox import LIBRIVOX_DIR, librivox_references
from ctxprune.paths import write_bytes_atomic, write_json_atomic

KINDS = ("en", "multi")
FORMAT = 1  # bump when the layout changes, so that saved fixtures are rebuilt
MULTI_LANGUAGES = ("en", "de", "es", "fr", "it")
FLOOR_DBFS, SPEECH_DBFS, TRIM_DB = -60.0, -23.0, -40.0
LEAD_S, TAIL_S = 0.5, 1.0
EN_TARGET_S = 210.0
LIBRIVOX_SLOTS = (3, 10, 16, 22, 29)  # positions of the real clips among the `en` utterances
PROSODY = {"pico": ((90, 106), (90, 111)), "mbrola": ((140, 176), (40, 61)), "espeak": ((150, 186), (35, 66))}
# a sentence a speaker reads as written: capital to full stop, no digits, symbols or dashes
_SENTENCE = re.compile(r"[A-ZÀ-Ý][^\d%\"():;/\[\]=+*#_«»\\.…-]*\.")
_ACRONYM = re.compile(r"\b\w*[A-Z]\w*[A-Z]")


@dataclass(frozen=True)
class FixtureUtterance:
    start: float  # seconds in the file (an exact sample position / 16 kHz)
    end: float
    text: str
    language: str
    speaker: str


@dataclass(frozen=True)
class LongFixture:
    audio: Path
    utterances: tuple[FixtureUtterance, ...]
    duration: float

    def reference(self, language: str | None = None) -> str:
        """The whole file's reference text in order (or one language's), what long-form WER scores."""
        return " ".join(u.text for u in self.utterances if language in (None, u.language))


@dataclass(frozen=True)
class _Speaker:
    name: str
    family: str
    language: str
    voice: str
    speed: int
    pitch: int


def _speakers(language: str, rng: random.Random) -> list[_Speaker]:
    """Pico and espeak-ng are required (one-line error naming the package); MBROLA and Pico en-GB are
    used where installed. Each speaker keeps one prosody, so that it sounds like one person."""
    voices.check_voice("pico", language, voices.PICO_VOICES[language])
    voices.check_voice("espeak", language, "m3")
    chosen = [("pico", voices.PICO_VOICES[language])]
    chosen += [("pico", "en-GB")] if language == "en" and list(voices.PICO_DATA.glob("en-GB_*.bin")) else []
    mbrola = shutil.which("mbrola") and voices.MBROLA_VOICES.get(language, ())
    chosen += [("mbrola", v) for v in mbrola or () if (voices.MBROLA_DATA / v / v).is_file()]
    chosen += [("espeak", "m3"), ("espeak", "f2")]
    out = []
    for family, voice in chosen:
        speed, pitch = (rng.randrange(*r) for r in PROSODY[family])
        label = f"{voices.ESPEAK_VOICES[language]}+{voice}" if family == "espeak" else voice
        out.append(_Speaker(f"{family}:{label}", family, language, voice, speed, pitch))
    return out


@cache
def _pairs(language: str) -> tuple[str, ...]:
    """Gettext sentences that read as speech: 6-16 words, capital to full stop, no digits, acronyms or
    symbols (English: the English sides of the German pairs)."""
    pairs = read_pairs("de" if language == "en" else language)
    texts = (p.english if language == "en" else p.text for p in pairs)
    return tuple(
        t for t in texts if 6 <= len(t.split()) <= 16 and _SENTENCE.fullmatch(t) and not _ACRONYM.search(t)
    )


def _texts(language: str, n: int, rng: random.Random, seed: int) -> list[str]:
    """About a quarter template sentences (numbers, dates, money), the rest gettext sentences."""
    from ctxprune.data.templates import template_sentences  # Babel: only where sentences are made

    pairs = list(_pairs(language))
    n_pairs = min(len(pairs), n - n // 4)
    texts = [t.text for t in template_sentences(language, n - n_pairs, seed)] + rng.sample(pairs, n_pairs)
    rng.shuffle(texts)
    return texts


def _cast(speakers: list[_Speaker], n: int, rng: random.Random) -> list[_Speaker]:
    """`n` turns, round-robin over the speakers in a seeded order: every voice speaks, none twice in a row."""
    order = rng.sample(speakers, len(speakers))
    return [order[k % len(order)] for k in range(n)]


def _trim(audio: np.ndarray) -> np.ndarray:
    """Cut leading and trailing silence: keep from the first to the last sample where the 10 ms RMS
    envelope is within `TRIM_DB` of its maximum."""
    win = SAMPLE_RATE // 100
    env = np.sqrt(np.convolve(audio.astype(np.float64) ** 2, np.ones(win) / win, mode="same"))
    loud = np.flatnonzero(env > env.max() * 10 ** (TRIM_DB / 20))
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio[:0]


def _level(audio: np.ndarray) -> np.ndarray:
    """Every clip at the same loudness (`SPEECH_DBFS` RMS), peaks below 0.9."""
    rms, peak = float(np.sqrt(np.mean(audio**2))), float(np.abs(audio).max())
    return (audio * min(10 ** (SPEECH_DBFS / 20) / rms, 0.9 / peak)).astype(np.float32)


def _say(job: tuple[_Speaker, str]) -> np.ndarray:
    s, text = job
    if s.family == "pico" and s.voice != voices.PICO_VOICES[s.language]:  # speak(): one Pico voice a language
        markup = f"<speed level='{s.speed}'><pitch level='{s.pitch}'>{voices._escape(text)}</pitch></speed>"
        audio, rate = voices._run(["pico2wave", "-l", s.voice], markup, "pico2wave")
    else:
        audio, rate = voices.speak(s.family, s.language, s.voice, s.speed, s.pitch, text)
    audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ") if rate != SAMPLE_RATE else audio
    return _level(_trim(np.asarray(audio, np.float32)))


Clip = tuple[np.ndarray, str, str, str]  # audio, text, language, speaker


def _synthesize(language: str, n: int, rng: random.Random, seed: int) -> tuple[list[Clip], list[_Speaker]]:
    speakers = _speakers(language, rng)
    jobs = list(zip(_cast(speakers, n, rng), _texts(language, n, rng, seed), strict=True))
    with ThreadPoolExecutor(max_workers=4) as pool:  # one program call per sentence; threads just wait
        audios = list(pool.map(_say, jobs))
    return [(a, text, language, s.name) for a, (s, text) in zip(audios, jobs, strict=True)], speakers


def _lay_out(clips: list[Clip], gaps: list[float], start: int, fill_s: float, at_least=0, limit_s=1e9):
    """Place clips one gap apart from sample `start` until `fill_s` is filled (and `at_least` placed),
    never past `limit_s`."""
    placed, pos = [], start
    for k, clip in enumerate(clips):
        begin = pos + (round(gaps[k] * SAMPLE_RATE) if k else 0)
        if begin + len(clip[0]) - start > limit_s * SAMPLE_RATE:
            break
        placed.append((begin, clip))
        pos = begin + len(clip[0])
        if pos - start >= fill_s * SAMPLE_RATE and k + 1 >= at_least:
            break
    return placed, pos


def _plan(kind: str, seed: int) -> tuple[list[tuple[int, Clip]], int, dict]:
    rng = random.Random(f"long-fixture/{kind}/{seed}")
    if kind == "en":
        clips, speakers = _synthesize("en", 60, rng, seed)
        refs = librivox_references(LIBRIVOX_DIR)
        real = [
            (_level(_trim(load_audio(p))), text, "en", "librivox:austen") for p, text in sorted(refs.items())
        ]
        slots = [s + rng.randrange(-1, 2) for s in LIBRIVOX_SLOTS]
        for slot, clip in zip(slots, real, strict=True):
            clips.insert(slot, clip)
        gaps = [rng.uniform(0.3, 3.0) for _ in clips]
        for k in rng.sample(range(4, 30), 2):
            gaps[k] = rng.uniform(4.0, 8.0)
        placed, end = _lay_out(clips, gaps, int(LEAD_S * SAMPLE_RATE), EN_TARGET_S, slots[-1] + 1)
    else:
        placed, end, speakers = [], int(LEAD_S * SAMPLE_RATE), []
        for language in MULTI_LANGUAGES:
            clips, cast = _synthesize(language, 16, rng, seed)
            gaps = [rng.uniform(0.3, 3.0) for _ in clips]
            start = end + (int(rng.uniform(1.0, 3.0) * SAMPLE_RATE) if placed else 0)
            block, end = _lay_out(clips, gaps, start, rng.uniform(28.0, 38.0), limit_s=40.0)
            placed, speakers = placed + block, speakers + cast
    info = {"speakers": [asdict(s) for s in speakers], "catalogs": catalogs_digest(["de", "fr", "es", "it"])}
    return placed, end + int(TAIL_S * SAMPLE_RATE), info


def _paths(out_dir: Path, kind: str) -> tuple[Path, Path]:
    return out_dir / f"long-{kind}.flac", out_dir / f"long-{kind}.json"


def build_long_fixture(out_dir: Path, kind: str = "en", seed: int = 0) -> LongFixture:
    """Build `long-<kind>.flac` and `.json` in `out_dir` (deterministic for a seed); reuses them when both
    exist and were built for this kind and seed."""
    if kind not in KINDS:
        raise CtxpruneError(f"unknown long fixture kind {kind!r}; known: {', '.join(KINDS)}")
    flac, record = _paths(Path(out_dir), kind)
    if flac.exists() and record.exists():
        try:
            saved = json.loads(record.read_text())
            if (saved.get("kind"), saved.get("seed"), saved.get("format")) == (kind, seed, FORMAT):
                return load_long_fixture(out_dir, kind)
        except (ValueError, OSError):
            pass  # unreadable record: rebuild
    began = time.perf_counter()
    placed, n_samples, info = _plan(kind, seed)
    audio = np.random.default_rng(seed).standard_normal(n_samples).astype(np.float32)
    audio *= np.float32(10 ** (FLOOR_DBFS / 20))
    utterances = []
    for pos, (clip, text, language, speaker) in placed:
        audio[pos : pos + len(clip)] += clip
        end = (pos + len(clip)) / SAMPLE_RATE
        utterances.append(asdict(FixtureUtterance(pos / SAMPLE_RATE, end, text, language, speaker)))
    record.unlink(missing_ok=True)  # the record names a finished pair: never an old record with new audio
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    write_bytes_atomic(flac, buffer.getvalue())
    build = {**info, "versions": voices.versions(), "build_seconds": round(time.perf_counter() - began, 2)}
    head = {"format": FORMAT, "kind": kind, "seed": seed, "sample_rate": SAMPLE_RATE}
    write_json_atomic(
        record, {**head, "duration": n_samples / SAMPLE_RATE, "build": build, "utterances": utterances}
    )
    return load_long_fixture(out_dir, kind)


def load_long_fixture(out_dir: Path, kind: str = "en") -> LongFixture:
    """The fixture a build wrote to `out_dir`."""
    flac, record = _paths(Path(out_dir), kind)
    if not (flac.exists() and record.exists()):
        raise CtxpruneError(f"no long fixture {kind!r} in {out_dir}; build it with build_long_fixture()")
    saved = json.loads(record.read_text())
    utterances = tuple(FixtureUtterance(**u) for u in saved["utterances"])
    return LongFixture(audio=flac, utterances=utterances, duration=float(saved["duration"]))


def boundary_error(segments: list[tuple[float, float]], fixture: LongFixture) -> dict:
    """How far predicted segment starts and ends lie from the true ones, in seconds: a subtitle is good when
    its cues begin and end where speech does. Each true start is matched to the nearest predicted start and
    each true end to the nearest predicted end, so missed or merged utterances raise the error; extra
    segments do not (compare `predicted` with `true`)."""

    def nearest(true: list[float], predicted: list[float]) -> np.ndarray:
        t, p = np.array(true, np.float64), np.array(predicted, np.float64)
        return np.abs(t[:, None] - p[None, :]).min(axis=1) if p.size else np.full(t.size, np.inf)

    start_err = nearest([u.start for u in fixture.utterances], [s for s, _ in segments])
    end_err = nearest([u.end for u in fixture.utterances], [e for _, e in segments])
    return {
        "mean_start_error_s": float(start_err.mean()),
        "mean_end_error_s": float(end_err.mean()),
        "mean_error_s": float(np.concatenate([start_err, end_err]).mean()),
        "true": len(fixture.utterances),
        "predicted": len(segments),
    }
