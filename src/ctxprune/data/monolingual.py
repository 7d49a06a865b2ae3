"""Monolingual sentences from text Debian ships: the fortune collections (`fortunes-de`, `fortunes-es`,
`fortunes-it`) and, for French, the French Debian Reference (`debian-reference-fr`, plain text).

They have no English translation, so they serve training only (a distilled student needs no reference;
transcription rows still have their own text). Fortunes are cut into sentences of 4 to 25 words; a
sentence is kept only if it reads as speech: letters and ordinary punctuation, no digits, no markup,
no commands or paths (the Debian Reference is full of them).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
DEBIAN_REFERENCE_FR = Path("/usr/share/debian-reference/debian-reference.fr.txt.gz")
SOURCES = {"de": "fortunes-de", "es": "fortunes-es", "it": "fortunes-it", "fr": "debian-reference-fr"}
MIN_WORDS, MAX_WORDS = 4, 25

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPEAKABLE = re.compile(r"^[^\W\d_][\w\s,;:.!?'’«»¡¿\-]*[.!?]$")  # letters first, punctuation last
_SHOUTING = re.compile(r"\b[A-ZÄÖÜÀ-Ý]{2,}\W+[A-ZÄÖÜÀ-Ý]{2,}\b")  # headings and definitions in capitals
# frequent words of each language, to keep sentences that are in it (the French reference has untranslated
# English paragraphs)
_FUNCTION_WORDS = {
    "de": {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "zu", "ich", "sie", "es", "mit", "den"},
    "es": {"el", "la", "los", "las", "de", "que", "y", "en", "un", "una", "no", "es", "se", "por"},
    "it": {"il", "la", "di", "che", "e", "non", "un", "una", "per", "è", "in", "si", "le", "lo"},
    "fr": {"le", "la", "les", "de", "des", "et", "est", "un", "une", "pour", "que", "du", "en", "ne"},
}
_ENGLISH_WORDS = {"the", "and", "of", "to", "is", "you", "with", "for", "this", "that"}
_NOT_PROSE = re.compile(r"\d|_|--|\s-\w|\b(?:http|www|sudo|apt|etc/|usr/)\b|[/\\|@#$%^&*=<>{}\[\]~`\"]")


def sentences(text: str, language: str) -> list[str]:
    """Speakable sentences of 4 to 25 words in `text` (whitespace and line breaks joined) that read as
    `language`."""
    out = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        sentence = sentence.strip(" '\"-")
        words = set(re.findall(r"\w+", sentence.casefold()))
        if (
            MIN_WORDS <= len(sentence.split()) <= MAX_WORDS
            and _SPEAKABLE.match(sentence)
            and not _NOT_PROSE.search(sentence)
            and not _SHOUTING.search(sentence)
            and words & _FUNCTION_WORDS[language]
            and not words & _ENGLISH_WORDS
        ):
            out.append(sentence)
    return out


def _fortune_files(language: str) -> list[Path]:
    """The collection's files in UTF-8 (the `.u8` copy where one exists), in a stable order."""
    folder = FORTUNES / language
    if not folder.is_dir():
        return []
    names = {p.name for p in folder.iterdir() if p.is_file()}  # `off/` (offensive) is left out
    return [
        folder / (f"{name}.u8" if f"{name}.u8" in names else name)
        for name in sorted(names)
        if not name.endswith((".dat", ".u8"))
    ]


def _texts(language: str) -> list[tuple[str, str]]:
    """(text, source file) pairs of one language's collection; fortunes are split at their `%` lines."""
    if language == "fr":
        if not DEBIAN_REFERENCE_FR.is_file():
            return []
        return [
            (gzip.decompress(DEBIAN_REFERENCE_FR.read_bytes()).decode("utf-8", "replace"), "debian-reference")
        ]
    out = []
    for path in _fortune_files(language):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # a collection in another encoding without a .u8 copy
        out += [(fortune, path.name.removesuffix(".u8")) for fortune in text.split("\n%\n")]
    return out


def monolingual_sentences(language: str) -> list[tuple[str, str]]:
    """(sentence, "mono:<package>/<file>") for a language, deduplicated, in a stable order; empty when
    the package is not installed or the language has none."""
    seen: set[str] = set()
    out = []
    for text, source in _texts(language):
        for sentence in sentences(text, language):
            if sentence.casefold() not in seen:
                seen.add(sentence.casefold())
                out.append((sentence, f"mono:{SOURCES[language]}/{source}"))
    return out
