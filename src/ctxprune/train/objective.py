"""The label loss: teacher-forced cross-entropy of the gated model on prompt + target tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ctxprune.gating.skip import Gates
from ctxprune.models.whisper import GatedWhisper


def teacher_forced_loss(
    gw: GatedWhisper, features: Tensor, decoder_input_ids: Tensor, labels: Tensor, gates: Gates = None
) -> Tensor:
    """Mean cross-entropy over target tokens (labels of -100 are ignored)."""
    return decoder_loss(gw, gw.encode(features, gates), decoder_input_ids, labels, gates)


def decoder_loss(
    gw: GatedWhisper, encoder_out: Tensor, decoder_input_ids: Tensor, labels: Tensor, gates: Gates = None
) -> Tensor:
    """The same loss from an encoder output that is already computed (gate training needs it first)."""
    logits = teacher_forced_logits(gw, encoder_out, decoder_input_ids, gates)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


def teacher_forced_logits(
    gw: GatedWhisper,
    encoder_out: Tensor,
    decoder_input_ids: Tensor,
    gates: Gates = None,
    hidden: list[Tensor] | None = None,
    utterance: Tensor | None = None,
) -> Tensor:
    """Logits at every position of `decoder_input_ids`, all fed at once (each layer's output to `hidden`).
    With `utterance`, row r of the ids belongs to `encoder_out[utterance[r]]` (its cross-attention
    K/V are projected and kept once per utterance)."""
    rows, n = decoder_input_ids.shape
    device = encoder_out.device.type
    # under autocast the projections write K/V in the autocast dtype, whatever the encoder output's
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else encoder_out.dtype
    sources = None if utterance is None else encoder_out.shape[0]
    cache = gw.new_cache(rows, n, dtype=dtype, sources=sources)
    gw.prefill_cross(encoder_out, cache, gates, utterance)
    positions = torch.arange(n, device=encoder_out.device)
    return gw.decode(decoder_input_ids, positions, cache, gates, length=n, hidden=hidden)
