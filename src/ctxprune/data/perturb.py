"""Speed perturbation of training audio: more voices from the same corpus.

Gate sets trained on for more steps fit the corpus's few synthetic voices: they gained on the test split
(whose voices are the training voices) and lost on unseen voices and on real speech (docs/training.md,
"Eighth step"). Resampling an utterance by a factor near 1 and playing it at the original rate changes
its tempo and pitch together, the cheap speaker-variety trick of Kaldi's recipes (Ko et al., 2015,
"Audio augmentation for speech recognition"). The words stay the same, so the teacher's pseudo-labels
still hold; the teacher sees the same perturbed audio as the student, so the KL compares like with like.

A row's factor depends only on (seed, epoch, row id), not on which loader process draws it, so a
resumed run sees the same audio as an uninterrupted one.
"""

from __future__ import annotations

import random

import numpy as np
import soxr

from ctxprune.data.audio import SAMPLE_RATE
from ctxprune.errors import CtxpruneError

LIMITS = (0.5, 2.0)  # beyond these the audio stops sounding like speech


class SpeedPerturbation:
    def __init__(self, factors: list[float], seed: int = 0):
        if not factors or not all(LIMITS[0] <= f <= LIMITS[1] for f in factors):
            raise CtxpruneError(
                f"speed_perturb factors must lie in [{LIMITS[0]}, {LIMITS[1]}], got {factors}"
            )
        self.factors = list(factors)
        self.seed = seed
        self.epoch = 0  # set by the training loop before each epoch's loader starts

    def factor(self, row_id: str) -> float:
        return random.Random(f"{self.seed}/{self.epoch}/{row_id}").choice(self.factors)

    def __call__(self, row_id: str, audio: np.ndarray) -> np.ndarray:
        """`audio` played `factor` times as fast: len(audio) / factor samples at the same rate."""
        f = self.factor(row_id)
        if f == 1.0:
            return audio
        return soxr.resample(audio, SAMPLE_RATE * f, SAMPLE_RATE).astype(np.float32, copy=False)
