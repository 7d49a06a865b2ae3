"""What Whisper gives a gate predictor to read: pooled log-mel before the model runs, the pooled encoder
output after the encoder, the tags; and the predictor config that fits Whisper's shapes. With
`--language auto`, gates see the `unknown` language bucket, since the language is only known after the
encoder has run.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import WhisperConfig

from ctxprune.gating.predictor import PredictorConfig
from ctxprune.gating.space import GateSpace
from ctxprune.models.whisper import DECODER_PREFIX
from ctxprune.models.whisper_tokens import TASKS

UNKNOWN_LANGUAGE = "unknown"


def pooled_log_mel(features: Tensor, frames: Tensor) -> Tensor:
    """Mean and std of each mel band over the real (unpadded) frames: [batch, 2 * n_mels]."""
    valid = (
        torch.arange(features.shape[-1], device=features.device)[None] < frames.to(features.device)[:, None]
    )
    w = valid[:, None].to(features.dtype)
    n = w.sum(-1).clamp_min(1)
    mean = (features * w).sum(-1) / n
    var = (((features - mean[..., None]) ** 2) * w).sum(-1) / n
    return torch.cat([mean, var.sqrt()], -1)


def pooled_encoder(encoder_out: Tensor, frames: Tensor) -> Tensor:
    """Mean of the encoder output over positions that saw real audio (the conv front-end halves frames)."""
    positions = (frames.to(encoder_out.device) + 1) // 2
    valid = torch.arange(encoder_out.shape[1], device=encoder_out.device)[None] < positions[:, None]
    w = valid[..., None].to(encoder_out.dtype)
    return (encoder_out * w).sum(1) / w.sum(1).clamp_min(1)


def whisper_predictor_config(
    config: WhisperConfig, space: GateSpace, languages: list[str], **kwargs
) -> PredictorConfig:
    return PredictorConfig(
        space=space,
        tasks=list(TASKS),
        languages=languages,
        audio_dim=2 * config.num_mel_bins,
        encoder_dim=config.d_model,
        late_prefix=DECODER_PREFIX,
        **kwargs,
    )
