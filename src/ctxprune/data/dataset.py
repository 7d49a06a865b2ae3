"""Loading a corpus for training and evaluation: a dataset, duration-bucketed batches, and a collate
function that turns a batch into Whisper features, context tags and (optionally) token targets."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import Example, read_manifest


class SpeechDataset(Dataset):
    def __init__(self, corpus: str | Path, split: str, tasks: tuple[str, ...] | None = None):
        self.corpus = Path(corpus)
        self.examples = [e for e in read_manifest(self.corpus, split) if tasks is None or e.task in tasks]

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
    """Batch -> dict(features, frames, tasks, languages, targets, examples[, labels]).

    With a tokenizer and `WhisperTokens`, `labels` holds prompt + target tokens + end-of-text per row,
    padded with -100 (ignored by the loss); `decoder_input_ids` is the same sequence shifted right."""

    def __init__(self, n_mels: int = 80, tokenizer=None, tokens=None, max_target_tokens: int = 200):
        self.n_mels = n_mels
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.max_target_tokens = max_target_tokens

    def __call__(self, batch: list[tuple[Example, np.ndarray]]) -> dict:
        examples = [ex for ex, _ in batch]
        features, frames = features_for([audio for _, audio in batch], self.n_mels)
        out = {
            "features": features,
            "frames": frames,
            "tasks": [e.task for e in examples],
            "languages": [e.language for e in examples],
            "targets": [e.target for e in examples],
            "examples": examples,
        }
        if self.tokenizer is not None:
            rows = []
            for e in examples:
                text = self.tokenizer.encode(" " + e.target.strip(), add_special_tokens=False)[
                    : self.max_target_tokens
                ]
                rows.append(self.tokens.prompt(e.language, e.task) + text + [self.tokens.eot])
            width = max(map(len, rows))
            seq = torch.full((len(rows), width), self.tokens.eot, dtype=torch.long)
            labels = torch.full((len(rows), width - 1), -100, dtype=torch.long)
            prompt_len = len(self.tokens.prompt("en", "transcribe"))
            for i, r in enumerate(rows):
                seq[i, : len(r)] = torch.tensor(r)
                labels[i, prompt_len - 1 : len(r) - 1] = torch.tensor(r[prompt_len:])
            out["decoder_input_ids"] = seq[:, :-1]
            out["labels"] = labels
        return out
