"""The voice families: errors that name what to install, and deterministic synthesis (Pico included)."""

import numpy as np
import pytest

from ctxprune.data import voices
from ctxprune.data.voices import FAMILIES, check_family, check_voice, speak
from ctxprune.errors import CtxpruneError


def test_an_unknown_family_lists_the_known_ones():
    with pytest.raises(CtxpruneError, match="known: pico, mbrola, espeak"):
        check_family("festival")


def test_a_missing_synthesizer_names_its_package(monkeypatch):
    monkeypatch.setattr(voices.shutil, "which", lambda name: None)
    with pytest.raises(
        CtxpruneError, match=r"pico2wave is not installed; run `apt-get install libttspico-utils`"
    ):
        check_voice("pico", "de", "de-DE")


def test_a_missing_mbrola_voice_names_its_package(monkeypatch, tmp_path):
    monkeypatch.setattr(voices, "MBROLA_DATA", tmp_path)
    with pytest.raises(CtxpruneError, match="install mbrola-de6"):
        check_voice("mbrola", "de", "de6")


@pytest.mark.parametrize("family,voice", [("pico", "de-DE"), ("mbrola", "de6"), ("espeak", "m3")])
def test_each_family_speaks_german_the_same_way_twice(family, voice):
    check_voice(family, "de", voice)
    speed, pitch = (95, 100) if family == "pico" else (160, 50)
    text = "Guten Morgen, der Zug fährt um acht Uhr <ab> & kommt pünktlich an."  # markup characters too
    first, rate = speak(family, "de", voice, speed, pitch, text)
    again, _ = speak(family, "de", voice, speed, pitch, text)
    assert rate >= 16000 and 1.5 < len(first) / rate < 10 and np.abs(first).max() > 0.05
    assert np.array_equal(first, again)


def test_prosody_changes_pico_speech():
    slow, rate = speak("pico", "it", "it-IT", 80, 100, "Il treno parte alle otto.")
    fast, _ = speak("pico", "it", "it-IT", 115, 100, "Il treno parte alle otto.")
    assert len(fast) < 0.9 * len(slow)
    assert FAMILIES == ("pico", "mbrola", "espeak")
