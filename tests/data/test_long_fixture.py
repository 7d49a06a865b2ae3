"""The long-form fixture: its true boundaries must be where speech is, its gaps quiet but not silent, and
its re-use instant, or every long-form test and bench built on it measures the fixture, not the model."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import soundfile as sf

from ctxprune.data import voices
from ctxprune.data.long_fixture import (
    LongFixture,
    boundary_error,
    build_long_fixture,
    load_long_fixture,
)
from ctxprune.errors import CtxpruneError
from ctxprune.eval.librivox import librivox_references


def _gaps(fixture: LongFixture) -> list[float]:
    return [b.start - a.end for a, b in itertools.pairwise(fixture.utterances)]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def en(tmp_path_factory) -> LongFixture:
    return build_long_fixture(tmp_path_factory.mktemp("long-en"), "en", seed=0)


def test_file_and_duration(en):
    info = sf.info(str(en.audio))
    assert (info.samplerate, info.channels, info.format) == (16_000, 1, "FLAC")
    assert 180 <= en.duration <= 240
    assert info.frames == round(en.duration * 16_000)
    assert en.audio.with_suffix(".json").exists()


def test_utterances_sorted_apart_and_varied(en):
    utts = en.utterances
    assert utts[0].start > 0 and utts[-1].end < en.duration
    assert all(u.start < u.end for u in utts)
    gaps = _gaps(en)
    assert min(gaps) >= 0.3 - 1e-3 and max(gaps) <= 8.0 + 1e-3  # sorted, never overlapping
    assert sum(g >= 4.0 for g in gaps) == 2  # the two long pauses
    assert sum(g <= 3.0 + 1e-3 for g in gaps) == len(gaps) - 2
    speakers = {u.speaker for u in utts}
    assert "librivox:austen" in speakers and len(speakers) >= 5
    assert all(a.speaker != b.speaker for a, b in itertools.pairwise(utts) if "librivox" not in a.speaker)
    assert any(any(c.isdigit() for c in u.text) for u in utts)  # template sentences with numbers


def test_speech_inside_floor_in_gaps(en):
    audio, rate = sf.read(str(en.audio), dtype="float32")
    floor = 10 ** (-60 / 20)
    for u, nxt in itertools.pairwise(en.utterances):
        inside = _rms(audio[round(u.start * rate) : round(u.end * rate)])
        gap = _rms(audio[round(u.end * rate) : round(nxt.start * rate)])
        assert inside > 20 * gap, u
        assert floor / 2 < gap < floor * 2, u  # the noise floor: quiet, not digital silence


def test_boundaries_are_where_speech_starts_and_ends(en):
    """Trimmed clips: the first and last 20 ms of each synthesized utterance carry sound above the floor."""
    audio, rate = sf.read(str(en.audio), dtype="float32")
    n = rate // 50
    for u in en.utterances:
        a, b = round(u.start * rate), round(u.end * rate)
        before = _rms(audio[a - n : a])
        assert max(np.abs(audio[a : a + n]).max(), np.abs(audio[b - n : b]).max()) > 5 * before, u


def test_reference_contains_librivox(en):
    reference = en.reference()
    for text in librivox_references().values():
        assert text in reference
    assert en.reference("en") == reference and en.reference("de") == ""


def test_rebuild_skipped_and_deterministic(en, tmp_path):
    before = en.audio.stat().st_mtime_ns
    began = time.perf_counter()
    again = build_long_fixture(en.audio.parent, "en", seed=0)
    assert time.perf_counter() - began < 0.5
    assert en.audio.stat().st_mtime_ns == before and again == en
    assert load_long_fixture(en.audio.parent, "en") == en
    other = build_long_fixture(tmp_path, "en", seed=0)
    assert other.audio.read_bytes() == en.audio.read_bytes() and other.utterances == en.utterances
    reseeded = build_long_fixture(tmp_path, "en", seed=1)  # a different seed in place: rebuilt
    assert reseeded.utterances != en.utterances


def test_boundary_error(en):
    perfect = [(u.start, u.end) for u in en.utterances]
    scores = boundary_error(perfect, en)
    assert scores == {
        "mean_start_error_s": 0.0,
        "mean_end_error_s": 0.0,
        "mean_error_s": 0.0,
        "true": len(perfect),
        "predicted": len(perfect),
    }
    shifted = boundary_error([(s + 0.2, e - 0.1) for s, e in perfect], en)
    assert shifted["mean_start_error_s"] == pytest.approx(0.2)
    assert shifted["mean_end_error_s"] == pytest.approx(0.1)
    assert shifted["mean_error_s"] == pytest.approx(0.15)
    assert boundary_error([], en)["mean_error_s"] == float("inf")


def test_multi_language_blocks(tmp_path):
    multi = build_long_fixture(tmp_path, "multi", seed=0)
    assert 150 <= multi.duration <= 210
    blocks = [(lang, list(g)) for lang, g in itertools.groupby(multi.utterances, key=lambda u: u.language)]
    assert [lang for lang, _ in blocks] == ["en", "de", "es", "fr", "it"]
    for lang, utts in blocks:
        assert 25 <= utts[-1].end - utts[0].start <= 40, lang
        assert len({u.speaker for u in utts}) >= 3, lang
        assert multi.reference(lang) == " ".join(u.text for u in utts)


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(CtxpruneError, match="unknown long fixture kind"):
        build_long_fixture(tmp_path, "fr")
    with pytest.raises(CtxpruneError, match="no long fixture"):
        load_long_fixture(tmp_path, "en")
    real_which = voices.shutil.which
    monkeypatch.setattr(
        voices.shutil, "which", lambda name: None if name == "pico2wave" else real_which(name)
    )
    with pytest.raises(CtxpruneError, match="libttspico-utils") as e:
        build_long_fixture(tmp_path, "en")
    assert "\n" not in str(e.value)
