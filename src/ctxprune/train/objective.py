"""The task loss: teacher-forced cross-entropy of the gated model on prompt + target tokens."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ctxprune.gating.skip import Gates
from ctxprune.models.whisper import GatedWhisper


def teacher_forced_loss(
    gw: GatedWhisper, features: Tensor, decoder_input_ids: Tensor, labels: Tensor, gates: Gates = None
) -> Tensor:
    """Mean cross-entropy over target tokens (labels of -100 are ignored)."""
    encoder_out = gw.encode(features, gates)
    cache = gw.new_cache(features.shape[0], decoder_input_ids.shape[1], dtype=encoder_out.dtype)
    gw.prefill_cross(encoder_out, cache, gates)
    logits = gw.decode(decoder_input_ids, cache, gates)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
