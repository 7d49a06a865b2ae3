"""Calibrate a Whisper gate predictor's logit shifts on dev rows (gating/calibrate.py says why); training
calls it at the start of its deterministic tail (train/run.py).

Only the masks are needed to measure sparsity, not decoding: the early gates come from the tags and the
pooled log-mel; the late gates also read the pooled encoder output, which is computed once per distinct
early mask of a batch and cached across the bisection's steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ctxprune.data.audio import load_audio
from ctxprune.data.features import features_for
from ctxprune.data.manifest import Example
from ctxprune.errors import CtxpruneError
from ctxprune.eval.quality import group_batches
from ctxprune.eval.suite import device_name, stack_sparsity
from ctxprune.gating.calibrate import Calibration, calibrate_shift
from ctxprune.gating.predictor import GateContext
from ctxprune.gating.skip import MaskPlan
from ctxprune.gating.sparsity import gate_weights
from ctxprune.gating.straight_through import apply_forced, inference_gates
from ctxprune.models.whisper import STACK_PREFIX
from ctxprune.models.whisper_pruning import UNKNOWN_LANGUAGE, PrunedWhisper, pooled_encoder, pooled_log_mel


@torch.inference_mode()
def calibrate_predictor(
    pruned: PrunedWhisper,
    corpus: Path,
    examples: list[Example],
    target: float,
    where: str,
    sparsity_by: str,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    on_progress: Callable[[int], None] | None = None,
) -> Calibration:
    """Set `pruned.predictor`'s logit shift so that its sparsity over `examples` is closest to `target`."""
    predictor = pruned.predictor
    if predictor is None:
        raise CtxpruneError("calibration needs a gate predictor")
    needs_encoder = "encoder" in predictor.config.context
    dtype = next(pruned.gated.model.parameters()).dtype
    batches = []
    for batch in group_batches(examples, batch_size):
        feats, frames = features_for(
            [load_audio(corpus / e.audio) for e in batch], pruned.gated.config.num_mel_bins
        )
        ctx = GateContext(
            task=[e.task for e in batch],
            language=[e.language or UNKNOWN_LANGUAGE for e in batch],
            audio=pooled_log_mel(feats, frames),
        )
        batches.append((ctx, feats if needs_encoder else None, frames))
        if on_progress:
            on_progress(len(batch))
    pooled: dict[tuple[int, bytes], torch.Tensor] = {}

    def masks() -> torch.Tensor:
        out = []
        for i, (ctx, feats, frames) in enumerate(batches):
            if needs_encoder:
                early = pruned.decide(replace(ctx, encoder=None))
                key = (i, early.numpy().tobytes())
                if key not in pooled:
                    plan = MaskPlan(early, list(pruned.space.names), device)
                    encoded = pruned.gated.encode(feats.to(device, dtype), plan)
                    pooled[key] = pooled_encoder(encoded, frames).float()
                ctx = replace(ctx, encoder=pooled[key])
            mask = inference_gates(predictor(ctx)).cpu()
            out.append(apply_forced(mask, predictor.force_keep, predictor.force_skip))
        return torch.cat(out)

    def sparsity_at(shift: torch.Tensor) -> float:
        predictor.config.logit_shift = shift.tolist()
        keep = masks().float().mean(0).tolist()
        keep_rate = dict(zip(pruned.space.names, keep, strict=True))
        return stack_sparsity(keep_rate, pruned.space, where, sparsity_by)

    weights = torch.zeros(len(pruned.space))
    stack = pruned.space.indices(STACK_PREFIX[where])
    weights[stack] = gate_weights(pruned.space, sparsity_by)[stack]
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
