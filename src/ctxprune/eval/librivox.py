"""WER of a transcriber on the five LibriVox clips that Debian's `pocketsphinx-testdata` ships."""

from __future__ import annotations

from pathlib import Path

from ctxprune.errors import CtxpruneError
from ctxprune.eval.metrics import asr_scores

LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


def librivox_references(directory: Path = LIBRIVOX_DIR) -> dict[Path, str]:
    """Audio path -> reference transcript, from the folder's `transcription` file."""
    listing = directory / "transcription"
    if not listing.exists():
        raise CtxpruneError(f"{listing} not found; install it with `apt-get install pocketsphinx-testdata`")
    refs = {}
    for line in listing.read_text().splitlines():
        text, _, file_id = line.rpartition("(")
        text = text.replace("<s>", "").replace("</s>", "").strip()
        refs[directory / f"{file_id.strip(') ')}.wav"] = text
    return refs


def word_error_rate(references: list[str], hypotheses: list[str], language: str = "en") -> float:
    return asr_scores(references, hypotheses, language)["wer"]
