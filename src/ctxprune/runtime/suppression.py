"""Whisper's suppressed tokens, as HF's Whisper `generate` applies them: `suppress_tokens` at every step,
`begin_suppress_tokens` at the first generated step, and end-of-text before `min_new_tokens`."""

from __future__ import annotations

import torch
from torch import Tensor

from ctxprune.models.whisper_tokens import WhisperTokens


class Suppression:
    """Whisper's suppressed tokens as additive -inf biases, built once per decode (no per-step copies):
    `suppress_tokens` always, `begin_suppress_tokens` at the first step, and end-of-text before
    `min_new_tokens` (as HF's `min_new_tokens`; benchmarks use it to decode a fixed length)."""

    def __init__(
        self, special: WhisperTokens, vocab: int, device: torch.device | str, min_new_tokens: int = 0
    ):
        later = torch.zeros(vocab, device=device)
        later[list(special.suppress)] = -torch.inf
        first = later.clone()
        first[list(special.begin_suppress)] = -torch.inf
        self.min_new_tokens = min_new_tokens
        self._biases: dict[tuple[bool, bool], Tensor] = {}  # by (first step, end-of-text allowed)
        for is_first, b in ((True, first), (False, later)):
            self._biases[(is_first, True)] = b
            self._biases[(is_first, False)] = b.clone().index_fill_(
                0, torch.tensor([special.eot], device=device), -torch.inf
            )

    def biases(self, first: bool, end_allowed: bool) -> Tensor:
        return self._biases[(first, end_allowed)]

    def bias(self, step: int) -> Tensor:
        return self.biases(step == 0, step >= self.min_new_tokens)

    def __call__(self, logits: Tensor, step: int) -> Tensor:
        """fp32 logits with the tokens of this step suppressed (a new tensor)."""
        return logits.float() + self.bias(step)
