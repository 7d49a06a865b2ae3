"""The Python API behind `ctxprune transcribe`: files in, text out, one fixed mask per utterance.

Files are read and split into 30 s chunks; chunks from all files are batched together, encoded,
language-detected when asked, decoded (greedy or beam search), and joined back per file. A file that cannot be
read is reported in its result and does not stop the others.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ctxprune.data.audio import SAMPLE_RATE, load_audio, split_chunks
from ctxprune.data.features import features_for
from ctxprune.errors import CtxpruneError
from ctxprune.runtime.decoding import GREEDY, DecodeOptions
from ctxprune.stack import StackSpec, load_stack


@dataclass
class ChunkRecord:
    """One decoded 30 s chunk of a file: its text, language, the modules that ran and the share of
    FLOPs executed (against dense, from measured component costs), and its share of the batch time."""

    text: str
    language: str
    ran: list[str]
    flops_executed_share: float
    seconds: float = 0.0

    def gates(self) -> dict:
        return {"ran": self.ran, "flops_executed_share": self.flops_executed_share}


@dataclass
class Transcription:
    path: str
    text: str = ""
    language: str | None = None
    task: str = "transcribe"
    duration: float = 0.0
    seconds: float = 0.0
    error: str | None = None
    gates: list[dict] | None = None  # per 30 s utterance: the modules that ran, share of FLOPs executed
    chunks: list[ChunkRecord] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        record = asdict(self)
        record.pop("chunks")
        for key in ("error", "gates"):
            if record[key] is None:
                record.pop(key)
        return record


@dataclass
class _Chunk:
    file: int
    audio: np.ndarray


class Transcriber:
    """Files in, text out, with the model that `spec` describes; `options` are the decoding choices."""

    def __init__(self, spec: StackSpec | None = None, options: DecodeOptions = GREEDY):
        self.spec, self.options = spec or StackSpec(), options
        self.stack = load_stack(self.spec)

    @property
    def special(self):
        return self.stack.loaded.tokens

    def check_request(self, task: str, language: str) -> None:
        """Refuse an unknown task or language (`auto`: detect it) with a one-line error."""
        self.special.check_task(task)
        if language != "auto":
            self.special.check_language(language)

    def transcribe(
        self,
        paths: Sequence[str | Path],
        task: str = "transcribe",
        language: str = "auto",
        batch_size: int = 8,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[Transcription]:
        """Transcribe (or translate to English) each file. `on_progress(n)` is called per decoded chunk."""
        self.check_request(task, language)
        if batch_size < 1:
            raise CtxpruneError("--batch-size must be at least 1")
        results = [Transcription(path=str(p), task=task) for p in paths]
        chunks: list[_Chunk] = []
        for i, p in enumerate(paths):
            try:
                audio = load_audio(p)
            except CtxpruneError as e:
                results[i].error = str(e)
                continue
            results[i].duration = round(len(audio) / SAMPLE_RATE, 3)
            chunks += [_Chunk(i, c) for c in split_chunks(audio)]
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start : start + batch_size]
            t0 = time.perf_counter()
            decoded = self._decode_batch([c.audio for c in batch], task, language)
            elapsed = time.perf_counter() - t0
            for chunk, record in zip(batch, decoded, strict=True):
                record.seconds = elapsed * len(chunk.audio) / sum(len(c.audio) for c in batch)
                results[chunk.file].chunks.append(record)
            if on_progress:
                on_progress(len(batch))
        for r in results:
            if r.chunks:
                r.text = " ".join(c.text for c in r.chunks if c.text).strip()
                r.language = Counter(c.language for c in r.chunks).most_common(1)[0][0]
                r.seconds = round(sum(c.seconds for c in r.chunks), 3)
                if self.spec.gates is not None:
                    r.gates = [c.gates() for c in r.chunks]
        return results

    def _decode_batch(self, audios: list[np.ndarray], task: str, language: str) -> list[ChunkRecord]:
        stack = self.stack
        feats, frames = features_for(audios, stack.gated.config.num_mel_bins)
        lang = None if language == "auto" else language
        result = stack.run(
            feats.to(self.spec.device, self.spec.dtype), frames, [task] * len(audios), [lang] * len(audios),
            options=self.options,
        )  # fmt: skip
        texts = stack.loaded.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
        names = stack.space.names
        flops = result.flops(stack.space, prompt_len=len(self.special.prompt("en", task)))
        records = []
        for text, detected, keep, (executed, dense) in zip(
            texts, result.languages, result.mask.tolist(), flops, strict=True
        ):
            ran = [n for n, k in zip(names, keep, strict=True) if k]
            records.append(ChunkRecord(text.strip(), detected, ran, round(executed / dense, 4)))
        return records
