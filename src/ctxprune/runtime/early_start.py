"""Starting to decode before the mask is known.

A predicted gate set decides the decoder's gates on the GPU, after the encoder, and the host must read
the mask to pick the decoder's graphs. At batch 1 the GPU would idle while the host waits for the mask
and then prepares decoding. Instead the host guesses the decoder signature (the one most often seen for
the request's context: masks follow the context), launches that lane's first token right behind the
encoder, and only then reads the mask. A right guess goes on with the lane; a wrong one wastes its first
token (a prefill) and starts the right lane behind it. The outcomes are counted, so a bench can say
how often a guess was wasted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import NamedTuple

from torch import Tensor

from ctxprune.runtime.cuda_graphs import GraphedGreedy

Signature = tuple[bool, ...]


class Started(NamedTuple):
    """A greedy lane whose first token was launched before its batch's mask was known
    (`decoding.BatchDecoding.start_early`)."""

    signature: Signature
    lane: GraphedGreedy
    done: Tensor  # 'every row has ended' after the first token, on the device


class SignatureGuesses:
    """The decoder signatures seen per context, and how the guesses made from them went."""

    def __init__(self) -> None:
        self._seen: defaultdict[tuple, Counter] = defaultdict(Counter)
        self.outcomes: Counter = Counter()  # "hit": decoding went on with the early lane; "miss": wasted

    def guess(self, context: tuple) -> Signature | None:
        """The signature most often seen for `context`; None before the first."""
        seen = self._seen.get(context)
        return seen.most_common(1)[0][0] if seen else None

    def record(self, context: tuple, signature: Signature, guess: Signature | None) -> None:
        """What the mask of a request in `context` turned out to be, and how its guess went."""
        self._seen[context][signature] += 1
        if guess is not None:
            self.outcomes["hit" if signature == guess else "miss"] += 1
