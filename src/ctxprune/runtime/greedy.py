"""Greedy decoding and language detection over `GatedWhisper`, one mask per row fixed for the utterance.

Token suppression follows HF's Whisper `generate`: `suppress_tokens` at every step and
`begin_suppress_tokens` at the first generated step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ctxprune.gating.skip import Gates
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_tokens import WhisperTokens

MAX_NEW_TOKENS = 224  # Whisper's own sample length: half the text context


@torch.inference_mode()
def detect_language(
    gw: GatedWhisper, encoder_out: Tensor, tokens: WhisperTokens, gates: Gates = None
) -> list[str]:
    """The most likely language tag for each row, from the logits after `<|startoftranscript|>`."""
    cache = gw.new_cache(encoder_out.shape[0], 1)
    gw.prefill_cross(encoder_out, cache, gates)
    sot = torch.full((encoder_out.shape[0], 1), tokens.sot, device=encoder_out.device)
    logits = gw.decode(sot, cache, gates)[:, -1]
    codes = list(tokens.lang_to_id)
    ids = torch.tensor([tokens.lang_to_id[c] for c in codes], device=logits.device)
    return [codes[j] for j in logits[:, ids].argmax(-1).tolist()]


@torch.inference_mode()
def greedy_decode(
    gw: GatedWhisper,
    encoder_out: Tensor,
    prompts: Tensor,
    tokens: WhisperTokens,
    gates: Gates = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[list[int]]:
    """Generated token ids per row (prompt and end-of-text excluded). `prompts` is [batch, P]."""
    batch, prompt_len = prompts.shape
    max_new_tokens = min(max_new_tokens, gw.config.max_target_positions - prompt_len)
    device = encoder_out.device
    cache = gw.new_cache(batch, prompt_len + max_new_tokens)
    gw.prefill_cross(encoder_out, cache, gates)
    suppress = torch.tensor(tokens.suppress, device=device, dtype=torch.long)
    begin_suppress = torch.tensor(tokens.begin_suppress, device=device, dtype=torch.long)

    logits = gw.decode(prompts.to(device), cache, gates)[:, -1]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    out = []
    for step in range(max_new_tokens):
        logits = logits.float()
        logits[:, suppress] = -torch.inf
        if step == 0:
            logits[:, begin_suppress] = -torch.inf
        nxt = torch.where(done, tokens.eot, logits.argmax(-1))
        out.append(nxt)
        done |= nxt == tokens.eot
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        logits = gw.decode(nxt[:, None], cache, gates)[:, -1]
    generated = torch.stack(out, 1).tolist() if out else [[] for _ in range(batch)]
    return [row[: row.index(tokens.eot)] if tokens.eot in row else row for row in generated]
