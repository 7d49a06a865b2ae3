"""Corpus manifests: one JSONL per split; reading them, summarising them, and checking the audio."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from ctxprune.errors import CtxpruneError

FIELDS = ("id", "audio", "duration", "language", "task", "text", "english", "voice", "seed", "family")
OPTIONAL = {"family": "espeak"}  # manifests of issues 1-12 lack it: their voices were all espeak-ng's


@dataclass(frozen=True)
class Example:
    id: str
    audio: str  # relative to the corpus directory
    duration: float
    language: str
    task: str
    text: str
    english: str | None  # None: a monolingual sentence, no English reference
    voice: str
    seed: int
    family: str = "espeak"  # the voice family (data/voices.py)

    @property
    def target(self) -> str | None:
        """What the model should output: the transcript, or the English translation (None where a
        monolingual sentence has none: such rows serve only objectives that need no reference)."""
        return self.english if self.task == "translate" else self.text

    @property
    def has_reference(self) -> bool:
        return self.target is not None


def read_manifest(corpus: Path, split: str, with_reference: bool = True) -> list[Example]:
    """A split's rows; by default only those with a reference (what scoring and label losses need)."""
    path = corpus / f"{split}.jsonl"
    if not path.exists():
        raise CtxpruneError(f"{path} not found; is {corpus} a corpus built by `ctxprune data build`?")
    examples = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            examples.append(Example(**{k: row[k] if k in row else OPTIONAL[k] for k in FIELDS}))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CtxpruneError(f"{path}:{n}: not a valid manifest row ({e})") from None
    return [e for e in examples if e.has_reference or not with_reference]


def audio_files(rows: list[Example], every: int = 1) -> list[str]:
    """The rows' audio files in manifest order, each once, and of those every `every`-th: a subset that
    spans the split (manifests run language by language), on which the speaker cache and training agree."""
    if every < 1:
        raise CtxpruneError(f"every must be at least 1, got {every}")
    return list(dict.fromkeys(e.audio for e in rows))[::every]


def splits(corpus: Path) -> list[str]:
    names = sorted(p.stem for p in corpus.glob("*.jsonl") if p.name != "plan.jsonl")
    if not names:
        raise CtxpruneError(f"{corpus}: no manifests (*.jsonl); build one with `ctxprune data build`")
    return names


def stats(corpus: Path) -> list[dict]:
    """Rows of (split, language, task, utterances, hours), in a stable order."""
    table: dict[tuple, list[float]] = defaultdict(list)
    for split in splits(corpus):
        for ex in read_manifest(corpus, split, with_reference=False):
            table[(split, ex.language, ex.task)].append(ex.duration)
    return [
        {"split": s, "language": lang, "task": t, "utterances": len(d), "hours": sum(d) / 3600}
        for (s, lang, t), d in sorted(table.items())
    ]


def family_stats(corpus: Path) -> list[dict]:
    """Rows of (split, family, language, utterances, hours): the voices of each split, one row per audio
    file (both tasks of an utterance share it)."""
    table: dict[tuple, dict[str, float]] = defaultdict(dict)
    for split in splits(corpus):
        for ex in read_manifest(corpus, split, with_reference=False):
            table[(split, ex.family, ex.language)][ex.audio] = ex.duration
    return [
        {"split": s, "family": f, "language": lang, "utterances": len(d), "hours": sum(d.values()) / 3600}
        for (s, f, lang), d in sorted(table.items())
    ]


def check(corpus: Path, on_progress: Callable[[], None] | None = None, tolerance: float = 0.01) -> list[str]:
    """Problems found: files missing, not decodable, or whose duration differs from the manifest."""
    problems = []
    seen: dict[str, float] = {}
    for split in splits(corpus):
        for ex in read_manifest(corpus, split, with_reference=False):
            if ex.audio in seen:  # both tasks share one file
                if abs(seen[ex.audio] - ex.duration) > tolerance:
                    problems.append(
                        f"{ex.id}: duration {ex.duration} disagrees with another row of {ex.audio}"
                    )
                continue
            path = corpus / ex.audio
            try:
                audio, rate = sf.read(str(path), dtype="float32")
                actual = len(audio) / rate
            except (sf.LibsndfileError, RuntimeError, OSError) as e:
                problems.append(f"{ex.id}: {ex.audio} missing or not decodable ({str(e).splitlines()[0]})")
                continue
            seen[ex.audio] = actual
            if abs(actual - ex.duration) > tolerance:
                problems.append(
                    f"{ex.id}: {ex.audio} lasts {actual:.3f} s, manifest says {ex.duration:.3f} s"
                )
            if on_progress:
                on_progress()
    return problems
