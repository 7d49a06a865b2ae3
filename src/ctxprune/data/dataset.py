"""Loading a corpus for training and evaluation: a dataset, duration-bucketed batches, and a collate
function that turns a batch into Whisper features, context tags and (optionally) token targets."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ctxprune.data.audio import load_audio
from ctxprune.data.features import frames_of, log_mel, packed, padded
from ctxprune.data.manifest import Example, audio_files, read_manifest
from ctxprune.data.perturb import SpeedPerturbation
from ctxprune.errors import CtxpruneError


class SpeechDataset(Dataset):
    def __init__(
        self,
        corpus: str | Path,
        split: str,
        tasks: tuple[str, ...] | None = None,
        with_reference: bool = True,
        every_audio: int = 1,
    ):
        """`every_audio`: only the rows of every n-th audio file (`manifest.audio_files`)."""
        self.corpus = Path(corpus)
        rows = read_manifest(self.corpus, split, with_reference=False)
        # the subset is picked from all rows, as the speaker cache picks it, before rows are dropped
        kept = set(audio_files(rows, every_audio)) if every_audio > 1 else None
        self.examples = [
            e
            for e in rows
            if (e.has_reference or not with_reference)
            and (kept is None or e.audio in kept)
            and (tasks is None or e.task in tasks)
        ]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[Example, np.ndarray]:
        ex = self.examples[i]
        return ex, load_audio(self.corpus / ex.audio)

    @property
    def durations(self) -> list[float]:
        return [e.duration for e in self.examples]


class DurationBucketSampler(Sampler[list[int]]):
    """Batches of similar duration (less padding in the decoder targets, steadier step times).

    Indices are shuffled, cut into windows of `batch_size * window` items, sorted by duration within a
    window and cut into batches; the batch order is then shuffled. Deterministic per (seed, epoch)."""

    def __init__(
        self, durations: list[float], batch_size: int, shuffle: bool = True, seed: int = 0, window: int = 50
    ):
        self.durations = durations
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.window = window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(f"{self.seed}/{self.epoch}")
        order = list(range(len(self.durations)))
        if self.shuffle:
            rng.shuffle(order)
        span = self.batch_size * self.window
        out = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: self.durations[i])
            out += [chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class Collate:
    """Batch -> dict(features, frames, tasks, languages, targets, examples[, token sequences]).

    With a tokenizer and `WhisperTokens`, `decoder_input_ids`/`labels` hold prompt + reference tokens +
    end-of-text per row (labels padded with -100, ignored by the losses; a row without a reference has
    no label). With `pseudo_labels` (token ids by utterance id), `teacher_input_ids`/`teacher_labels`
    hold the same for the teacher's own output. With `waveforms`, `audio` and `audio_lengths` hold
    the waveforms packed end to end instead of `features`, for padding and log-mel on the training
    device (data/features.py). With `vectors` (context input name -> vectors by row id, e.g. the cached
    speaker vectors), `vectors` holds each one's [batch, dim] tensor. With `perturb`, every row's audio
    is sped up or slowed down first (data/perturb.py)."""

    def __init__(
        self,
        n_mels: int = 80,
        tokenizer=None,
        tokens=None,
        max_target_tokens: int = 200,
        pseudo_labels: dict[str, list[int]] | None = None,
        waveforms: bool = False,
        vectors: dict[str, Callable[[list[str]], Tensor]] | None = None,
        perturb: SpeedPerturbation | None = None,
    ):
        self.n_mels = n_mels
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.max_target_tokens = max_target_tokens
        self.pseudo_labels = pseudo_labels
        self.waveforms = waveforms
        self.vectors = vectors or {}
        self.perturb = perturb

    def __call__(self, batch: list[tuple[Example, np.ndarray]]) -> dict:
        examples = [ex for ex, _ in batch]
        chunks = [audio if self.perturb is None else self.perturb(ex.id, audio) for ex, audio in batch]
        out = {
            "frames": frames_of(chunks),
            "tasks": [e.task for e in examples],
            "languages": [e.language for e in examples],
            "targets": [e.target for e in examples],
            "examples": examples,
        }
        if self.vectors:
            out["vectors"] = {name: by_ids([e.id for e in examples]) for name, by_ids in self.vectors.items()}
        if self.waveforms:
            out["audio"], out["audio_lengths"] = packed(chunks)
        else:
            out["features"] = log_mel(padded(*packed(chunks)), self.n_mels)
        if self.tokenizer is not None:
            references = [
                None
                if e.target is None
                else self.tokenizer.encode(" " + e.target.strip(), add_special_tokens=False)
                for e in examples
            ]
            out["decoder_input_ids"], out["labels"] = self._sequences(examples, references)
        if self.pseudo_labels is not None:
            missing = [e.id for e in examples if e.id not in self.pseudo_labels]
            if missing:
                raise CtxpruneError(f"no pseudo-label for {missing[0]}; label the corpus again")
            taught = [self.pseudo_labels[e.id] for e in examples]
            out["teacher_input_ids"], out["teacher_labels"] = self._sequences(examples, taught)
        return out

    def _sequences(self, examples: list[Example], texts: list[list[int] | None]) -> tuple[Tensor, Tensor]:
        """Prompt + text + end-of-text per row, shifted into (inputs, labels); no text: no labels."""
        rows = [
            (
                self.tokens.prompt(e.language, e.task),
                [] if t is None else [*t[: self.max_target_tokens], self.tokens.eot],
            )
            for e, t in zip(examples, texts, strict=True)
        ]
        return shifted_sequences(rows, self.tokens.eot)


def shifted_sequences(rows: list[tuple[list[int], list[int]]], pad: int) -> tuple[Tensor, Tensor]:
    """(prompt, body) token lists -> (inputs, labels), padded with `pad`: inputs are prompt + body less
    its last token; the labels are the body's tokens at the positions that predict them, -100 elsewhere."""
    width = max(len(p) + len(b) for p, b in rows)
    seq = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width - 1), -100, dtype=torch.long)
    for i, (prompt, body) in enumerate(rows):
        seq[i, : len(prompt) + len(body)] = torch.tensor(prompt + body)
        if body:
            labels[i, len(prompt) - 1 : len(prompt) + len(body) - 1] = torch.tensor(body)
    return seq[:, :-1], labels


def batch_features(batch: dict, device: torch.device, n_mels: int) -> Tensor:
    """The batch's log-mel on `device`, computed there when the collate sent waveforms."""
    if "audio" in batch:
        return log_mel(padded(batch["audio"], batch["audio_lengths"], device), n_mels)
    return batch["features"].to(device)
