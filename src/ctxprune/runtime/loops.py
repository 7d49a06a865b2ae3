"""Repetition loops caught while decoding, so that a looping row stops early instead of at the cap.

Greedy Whisper sometimes falls into a loop (the same words again and again, up to the length cap), and
pruned decoders do so more often: in the sixth campaign's evaluation 1 to 6 of 40 rows per group hit the
cap, and those rows alone move a group's WER by tens of points and cost more decoder FLOPs than the
dense model spends on the whole row. The guard watches each row's last tokens on the device (fixed
shapes, so it lives inside the CUDA graphs too): a row loops when its last `max(MIN_SPAN, 3 p)` tokens
repeat with a period p of at most `MAX_PERIOD` tokens, i.e. at least three copies of the repeated block
and at least `MIN_SPAN` tokens. Such a row ends there and is flagged; `Pipeline.run` has the dense
teacher decode a pruned row that looped again (the dense model answers where the pruned one failed).
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_PERIOD = 32  # longer blocks are sentences; three copies of one rarely fit before the cap anyway
MIN_SPAN = 24  # a short period must hold this long: "no, no, no" is speech, 24 tokens of it a loop


class LoopGuard:
    """Each row's last tokens in a fixed buffer; `__call__` records a step's tokens and says which rows
    loop now."""

    def __init__(
        self, batch: int, device: torch.device, max_period: int = MAX_PERIOD, min_span: int = MIN_SPAN
    ):
        periods = torch.arange(1, max_period + 1)
        spans = torch.clamp(3 * periods, min=min_span)
        window = int(spans.max())
        t = torch.arange(window)
        # compare position t with t - p over the last span - p positions of the window, per period p
        self.source = (t[None, :] - periods[:, None]).clamp(min=0).to(device)  # [P, W]
        self.ignored = (t[None, :] < window - (spans - periods)[:, None]).to(device)  # [P, W]
        self.padding = -1 - torch.arange(window, device=device)  # never a token, never equal to another
        self.tail = self.padding.repeat(batch, 1)
        self.looped = torch.zeros(batch, dtype=torch.bool, device=device)

    def reset(self) -> None:
        self.tail.copy_(self.padding.expand_as(self.tail))
        self.looped.zero_()

    def __call__(self, token: Tensor, ended: Tensor) -> Tensor:
        """Record `token` ([batch]) for every row; the rows that loop now. Rows that had `ended` before
        this step never do (they are fed end-of-text)."""
        self.tail.copy_(torch.cat([self.tail[:, 1:], token[:, None].to(self.tail.dtype)], 1))
        same = (self.tail[:, self.source] == self.tail[:, None, :]) | self.ignored  # [B, P, W]
        now = same.all(-1).any(-1) & ~ended
        self.looped |= now
        return now
