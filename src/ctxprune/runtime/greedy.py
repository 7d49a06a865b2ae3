"""Greedy decoding and language detection, one mask per row fixed for the utterance.

Token suppression follows HF's Whisper `generate`: `suppress_tokens` at every step and
`begin_suppress_tokens` at the first generated step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ctxprune.gating.skip import Gates
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.steps import EagerSteps

MAX_NEW_TOKENS = 224  # Whisper's own sample length: half the text context


@torch.inference_mode()
def detect_language(
    gw: GatedWhisper, encoder_out: Tensor, tokens: WhisperTokens, gates: Gates = None
) -> list[str]:
    """The most likely language tag for each row, from the logits after `<|startoftranscript|>`."""
    steps = EagerSteps(gw, encoder_out, gates, 1)
    sot = torch.full((encoder_out.shape[0], 1), tokens.sot, device=encoder_out.device)
    logits = steps.prompt(sot)
    codes = list(tokens.lang_to_id)
    ids = torch.tensor([tokens.lang_to_id[c] for c in codes], device=logits.device)
    return [codes[j] for j in logits[:, ids].argmax(-1).tolist()]


class Suppression:
    """Whisper's suppressed tokens as additive -inf biases, built once per decode (no per-step copies):
    `suppress_tokens` always, `begin_suppress_tokens` at the first step, and end-of-text before
    `min_new_tokens` (as HF's `min_new_tokens`; benchmarks use it to decode a fixed length)."""

    def __init__(
        self, tokens: WhisperTokens, vocab: int, device: torch.device | str, min_new_tokens: int = 0
    ):
        self.later = torch.zeros(vocab, device=device)
        self.later[list(tokens.suppress)] = -torch.inf
        self.first = self.later.clone()
        self.first[list(tokens.begin_suppress)] = -torch.inf
        self.eot, self.min_new_tokens = tokens.eot, min_new_tokens
        self.no_end = {
            k: b.clone().index_fill_(0, torch.tensor([tokens.eot], device=device), -torch.inf)
            for k, b in (("first", self.first), ("later", self.later))
        }

    def bias(self, step: int) -> Tensor:
        kind = "first" if step == 0 else "later"
        return self.no_end[kind] if step < self.min_new_tokens else getattr(self, kind)

    def __call__(self, logits: Tensor, step: int) -> Tensor:
        """fp32 logits with the tokens of this step suppressed (a new tensor)."""
        return logits.float() + self.bias(step)


@torch.inference_mode()
def greedy_search(
    steps, prompts: Tensor, tokens: WhisperTokens, max_new_tokens: int, min_new_tokens: int = 0
) -> list[list[int]]:
    """Generated token ids per row (prompt and end-of-text excluded), over `EagerSteps` or `GraphedSteps`."""
    batch = prompts.shape[0]
    logits = steps.prompt(prompts)
    suppress = Suppression(tokens, logits.shape[-1], logits.device, min_new_tokens)
    done = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    out = []
    for step in range(max_new_tokens):
        nxt = torch.where(done, tokens.eot, suppress(logits, step).argmax(-1))
        out.append(nxt)
        done |= nxt == tokens.eot
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        logits = steps.step(nxt)
    generated = torch.stack(out, 1).tolist() if out else [[] for _ in range(batch)]
    return [row[: row.index(tokens.eot)] if tokens.eot in row else row for row in generated]


def cache_length(gw: GatedWhisper, prompt_len: int, max_new_tokens: int) -> tuple[int, int]:
    """(new tokens, KV positions) within the decoder's position table."""
    max_new_tokens = min(max_new_tokens, gw.config.max_target_positions - prompt_len)
    return max_new_tokens, prompt_len + max_new_tokens


@torch.inference_mode()
def greedy_decode(
    gw: GatedWhisper,
    encoder_out: Tensor,
    prompts: Tensor,
    tokens: WhisperTokens,
    gates: Gates = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[list[int]]:
    """Eager greedy decoding of a batch with any mix of masks. `prompts` is [batch, P]."""
    max_new_tokens, max_len = cache_length(gw, prompts.shape[1], max_new_tokens)
    steps = EagerSteps(gw, encoder_out, gates, max_len)
    return greedy_search(steps, prompts.to(encoder_out.device), tokens, max_new_tokens)
