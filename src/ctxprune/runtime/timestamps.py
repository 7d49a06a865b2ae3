"""Whisper's timestamp rules and the long-form scores, as device tensors of fixed shape, so that greedy
decoding applies them inside its CUDA graphs.

The rules are HF's `WhisperTimeStampLogitsProcessor` (openai-whisper's `ApplyTimestampRules`): no
`<|notimestamps|>`; timestamps come in pairs (after a lone timestamp only another timestamp or
end-of-text; after a pair, text); they never decrease; the first token is a timestamp; and where the
timestamps together are likelier than any text token, a timestamp it is. Instead of re-reading the
generated row each step (HF loops over rows on the host), each row keeps its last two tokens and its
last timestamp on the device.

Alongside: the sum of the chosen tokens' log-probabilities (end-of-text included, as openai-whisper and
HF average them) and the no-speech probability after `<|startoftranscript|>`, which the long-form
algorithm reads to fall back to sampling or to skip a silent window.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ctxprune.models.whisper_tokens import WhisperTokens


class TimestampRules:
    """Per-row state of timestamp decoding for `batch` rows; `reset` starts an utterance."""

    def __init__(
        self,
        special: WhisperTokens,
        vocab: int,
        batch: int,
        device: torch.device | str,
        max_initial_timestamp_index: int | None = None,
        apply: bool = True,
    ):
        self.apply = apply  # False: only the scores (a prompt with <|notimestamps|>)
        self.begin = special.timestamp_begin
        self.eot = special.eot
        self.no_timestamps, self.no_speech = special.no_timestamps, special.no_speech
        ids = torch.arange(vocab, device=device)
        self.ids = ids
        self.is_timestamp = ids >= self.begin
        first = torch.zeros(vocab, device=device)
        first[ids < self.begin] = -torch.inf  # the first token is a timestamp
        if max_initial_timestamp_index is not None:
            first[ids > self.begin + max_initial_timestamp_index] = -torch.inf
        self.first_bias = first
        long = dict(dtype=torch.long, device=device)
        self.last = torch.full((batch,), -1, **long)  # the last generated token
        self.penultimate = torch.full((batch,), -1, **long)
        self.last_timestamp = torch.full((batch,), -1, **long)  # -1: none yet
        self.generated = torch.zeros(1, **long)
        self.sum_logprob = torch.zeros(batch, device=device)
        self.no_speech_prob = torch.zeros(batch, device=device)

    def reset(self, sot_logits: Tensor) -> None:
        """Start an utterance; `sot_logits` [batch, vocab]: the raw logits after `<|startoftranscript|>`."""
        self.last.fill_(-1)
        self.penultimate.fill_(-1)
        self.last_timestamp.fill_(-1)
        self.generated.zero_()
        self.sum_logprob.zero_()
        self.no_speech_prob.copy_(sot_logits.float().softmax(-1)[:, self.no_speech])

    def __call__(self, scores: Tensor, first: bool) -> Tensor:
        """fp32 scores (suppression applied) with the rules applied: a new tensor."""
        if not self.apply:
            return scores
        scores = scores.clone()
        scores[:, self.no_timestamps] = -torch.inf
        n = self.generated
        last_ts = (n >= 1) & (self.last >= self.begin)
        penultimate_ts = (n < 2) | (self.penultimate >= self.begin)
        ids = self.ids[None]
        pair_done = (last_ts & penultimate_ts)[:, None] & self.is_timestamp[None]
        lone = (last_ts & ~penultimate_ts)[:, None] & (ids < self.eot)
        has_ts = self.last_timestamp >= 0
        floor = torch.where(
            has_ts,
            torch.where(last_ts & ~penultimate_ts, self.last_timestamp, self.last_timestamp + 1),
            self.begin,
        )
        decreasing = self.is_timestamp[None] & (ids < floor[:, None])
        scores = scores.masked_fill(pair_done | lone | decreasing, -torch.inf)
        if first:
            scores = scores + self.first_bias
        logprobs = scores.log_softmax(-1)
        timestamp_logprob = logprobs[:, self.begin :].logsumexp(-1)
        max_text_logprob = logprobs[:, : self.begin].amax(-1)
        text = (timestamp_logprob > max_text_logprob)[:, None] & ~self.is_timestamp[None]
        return scores.masked_fill(text, -torch.inf)

    def record(self, scores: Tensor, chosen: Tensor, was_done: Tensor) -> None:
        """After choosing `chosen` [batch] from `scores`: add its log-probability (rows that had already
        ended add nothing) and move the state on."""
        logprob = scores.log_softmax(-1).gather(1, chosen[:, None])[:, 0]
        self.sum_logprob.add_(torch.where(was_done, 0.0, logprob))
        self.advance(chosen)

    def reorder(self, index: Tensor) -> None:
        """Row r continues from row `index[r]`'s history (beam search)."""
        for state in (
            self.last,
            self.penultimate,
            self.last_timestamp,
            self.sum_logprob,
            self.no_speech_prob,
        ):
            state.copy_(state.index_select(0, index))

    def advance(self, chosen: Tensor) -> None:
        """Move the state on by one chosen token per row."""
        self.penultimate.copy_(self.last)
        self.last.copy_(chosen)
        self.last_timestamp.copy_(torch.where(chosen >= self.begin, chosen, self.last_timestamp))
        self.generated.add_(1)


def sot_index(prompt_len: int, timestamps: bool) -> int:
    """Where `<|startoftranscript|>` sits in prompts of `prompt_len` tokens (after any previous text):
    before `<|lang|><|task|>`, and `<|notimestamps|>` unless timestamps are decoded."""
    return prompt_len - (3 if timestamps else 4)


def sample(scores: Tensor, temperature: float) -> Tensor:
    """A token per row: the argmax at temperature 0, else a draw from softmax(scores / temperature)
    (the exponential-race form of sampling, which needs no host sync and captures in a CUDA graph)."""
    if temperature <= 0:
        return scores.argmax(-1)
    race = torch.empty_like(scores).exponential_().log()
    return (scores / temperature - race).argmax(-1)
