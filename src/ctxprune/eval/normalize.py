"""One documented text normalizer for WER/CER: Whisper's own, as shipped in transformers.

English uses `EnglishTextNormalizer` (lower-case, punctuation removed, "Mr." -> "mister", numbers
and British spellings standardised; the spelling map is empty offline). Other languages use
`BasicTextNormalizer` (lower-case, punctuation and diacritic-free symbols removed).
"""

from __future__ import annotations

from functools import lru_cache

from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer


@lru_cache(maxsize=2)
def _normalizer(english: bool):
    return EnglishTextNormalizer({}) if english else BasicTextNormalizer()


def normalize(text: str, language: str = "en") -> str:
    return _normalizer(language == "en")(text).strip()
