"""The voices a corpus speaks with: three families of Debian's speech synthesizers.

- `pico` (SVOX Pico, `pico2wave`; Debian non-free `libttspico-utils`): natural enough that Whisper base
  transcribes it almost as well as real speech; one voice per language, prosody by markup
  (`<speed level>`, `<pitch level>`, in percent).
- `mbrola` (MBROLA diphone voices driven by espeak-ng; Debian contrib `mbrola`, `mbrola-de6` …): a second,
  usable speaker for German, French and English.
- `espeak` (espeak-ng's formant voices with its variants): deliberately hard, the corpus of issues 1-12.

Each synthesizer runs as one program call per sentence and writes a WAV file; its output depends only on
the text and the settings (byte-identical for the same tool versions).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ctxprune.errors import CtxpruneError

FAMILIES = ("pico", "mbrola", "espeak")
ESPEAK_VOICES = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it"}
PICO_VOICES = {"en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-ES", "it": "it-IT"}
MBROLA_VOICES = {"de": ("de6", "de7"), "fr": ("fr1", "fr4"), "en": ("en1", "us1")}  # the usable ones
PICO_DATA = Path("/usr/share/pico/lang")  # where pico2wave looks; compiled into it
MBROLA_DATA = Path("/usr/share/mbrola")  # where espeak-ng finds a voice as <voice>/<voice>
SETUP = "`make setup` installs it (with Pico and MBROLA from Debian's contrib and non-free components)"


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise CtxpruneError(f"unknown voice family {family!r}; known: {', '.join(FAMILIES)}")
    return family


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CtxpruneError(f"{name} is not installed; run `apt-get install {package}`, or {SETUP}")
    return path


def check_voice(family: str, language: str, voice: str) -> None:
    """A one-line error naming the package to install when a voice is missing on this machine."""
    check_family(family)
    if family == "espeak":
        _binary("espeak-ng", "espeak-ng")
    elif family == "pico":
        _binary("pico2wave", "libttspico-utils")
        if not list(PICO_DATA.glob(f"{PICO_VOICES[language]}_*.bin")):
            raise CtxpruneError(
                f"the Pico voice {PICO_VOICES[language]} is missing; install libttspico-data, or {SETUP}"
            )
    else:
        _binary("espeak-ng", "espeak-ng")
        _binary("mbrola", "mbrola")
        if not (MBROLA_DATA / voice / voice).is_file():
            raise CtxpruneError(f"the MBROLA voice {voice} is missing; install mbrola-{voice}, or {SETUP}")


def versions() -> dict[str, str | None]:
    """The synthesizers' versions as Debian records them (None where one is not installed)."""

    def package(name: str) -> str | None:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True)
        return out.stdout.strip() or None if out.returncode == 0 else None

    espeak = shutil.which("espeak-ng")
    espeak_version = (
        subprocess.run([espeak, "--version"], capture_output=True, text=True)
        .stdout.split("Data at")[0]
        .strip()
        if espeak
        else None
    )
    return {"espeak-ng": espeak_version, "pico": package("libttspico-utils"), "mbrola": package("mbrola")}


def _run(program: list[str], text: str, what: str) -> tuple[np.ndarray, int]:
    """`program -w WAV text`, the WAV read back (both synthesizers take this form)."""
    fd, wav = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        proc = subprocess.run([*program, "-w", wav, text], capture_output=True)
        if proc.returncode != 0:
            raise CtxpruneError(f"{what} failed: {proc.stderr.decode(errors='replace').strip()}")
        audio, rate = sf.read(wav, dtype="float32")
    finally:
        os.unlink(wav)
    return (audio.mean(axis=1) if audio.ndim > 1 else audio), rate


def speak(
    family: str, language: str, voice: str, speed: int, pitch: int, text: str
) -> tuple[np.ndarray, int]:
    """Raw speech (float32 mono, the synthesizer's own rate). `speed` and `pitch` are espeak-ng's words
    per minute and 0-99 for espeak and mbrola, Pico's percent levels for pico."""
    check_family(family)
    if family == "pico":
        markup = f"<speed level='{speed}'><pitch level='{pitch}'>{_escape(text)}</pitch></speed>"
        return _run(
            [_binary("pico2wave", "libttspico-utils"), "-l", PICO_VOICES[language]], markup, "pico2wave"
        )
    name = f"mb-{voice}" if family == "mbrola" else f"{ESPEAK_VOICES[language]}+{voice}"
    espeak = [_binary("espeak-ng", "espeak-ng"), "-v", name, "-s", str(speed), "-p", str(pitch), "-b", "1"]
    return _run(espeak, text, f"espeak-ng -v {name}")


def _escape(text: str) -> str:
    """Pico reads its text as markup: escape what would start or end a tag."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
