"""Calibrate a Whisper gate predictor's logit shifts on dev rows (gating/logit_shifts.py says why); training
calls it at the start of its deterministic tail (train/run.py).

Only the masks are needed to measure sparsity, not decoding: the early gates come from the tags and the
pooled log-mel; the late gates also read the pooled encoder output, which is computed once per distinct
early mask of a batch and cached across the bisection's steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import Example
from ctxprune.data.speaker import context_vectors
from ctxprune.eval.quality import group_batches
from ctxprune.eval.suite import device_name, stack_sparsity
from ctxprune.gating.logit_shifts import Calibration, calibrate_shift
from ctxprune.gating.policy import Masks, PredictedMasks, two_stage
from ctxprune.gating.predictor import GateContext
from ctxprune.gating.skip import MaskPlan
from ctxprune.gating.sparsity import gate_weights
from ctxprune.models.whisper import STACK_PREFIX, GatedWhisper
from ctxprune.models.whisper_context import UNKNOWN_LANGUAGE, pooled_encoder, pooled_log_mel


@torch.inference_mode()
def calibrate_predictor(
    policy: PredictedMasks,
    gw: GatedWhisper,
    corpus: Path,
    examples: list[Example],
    target: float,
    where: str,
    sparsity_by: str,
    batch_size: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> Calibration:
    """Set the policy's predictor's logit shift so that its sparsity over `examples` is closest to
    `target`."""
    predictor = policy.predictor
    device, dtype = gw.device, next(gw.model.parameters()).dtype
    batches = []
    for batch in group_batches(examples, batch_size):
        chunks = [load_audio(corpus / e.audio) for e in batch]
        feats, frames = features_for(chunks, gw.config.num_mel_bins)
        ctx = GateContext(
            task=[e.task for e in batch],
            language=[e.language or UNKNOWN_LANGUAGE for e in batch],
            audio=pooled_log_mel(feats, frames),
            vectors=context_vectors(policy.reads, chunks),
        )
        batches.append((ctx, feats if policy.reads_encoder else None, frames))
        if on_progress:
            on_progress(len(batch))
    pooled: dict[tuple[int, bytes], torch.Tensor] = {}  # the encoder summary per batch and early mask

    def encoder_stage(i: int, feats: torch.Tensor | None, frames: torch.Tensor):
        """The encoder stage with its output replaced by the summary the late gates read, cached."""

        def encode(early: Masks, late):
            if feats is None:  # the late gates do not read the encoder: no need to run it
                return None, late(None)
            key = (i, early.values.numpy().tobytes())
            if key not in pooled:
                plan = MaskPlan(early.values, gw.gate_names, device)
                pooled[key] = pooled_encoder(gw.encode(feats.to(device, dtype), plan), frames).float()
            return pooled[key], late(pooled[key])

        return encode

    def masks() -> torch.Tensor:
        out = []
        for i, (ctx, feats, frames) in enumerate(batches):
            mask, _ = two_stage(policy, ctx, encoder_stage(i, feats, frames), summarize=lambda s: s)
            out.append(mask.values)
        return torch.cat(out)

    def sparsity_at(shift: torch.Tensor) -> float:
        predictor.config.logit_shift = shift.tolist()
        keep = masks().float().mean(0).tolist()
        keep_rate = dict(zip(policy.space.names, keep, strict=True))
        return stack_sparsity(keep_rate, policy.space, where, sparsity_by)

    weights = torch.zeros(len(policy.space))
    stack = policy.space.indices(STACK_PREFIX[where])
    weights[stack] = gate_weights(policy.space, sparsity_by)[stack]
    calibration = calibrate_shift(sparsity_at, weights / weights.sum(), target)
    predictor.config.logit_shift = calibration.shift
    return calibration


def calibration_record(calibration: Calibration, space, rows: int, device: str | torch.device) -> dict:
    """What a card says about its calibration."""
    return {
        "split": "dev",
        "rows": rows,
        "logit_shift": dict(zip(space.names, calibration.shift, strict=True)),
        "sparsity_before": calibration.sparsity_before,
        "sparsity_after": calibration.sparsity_after,
        "device": device_name(str(device)),
        "torch": torch.__version__,
    }
