"""Gate-predictor training: straight-through Gumbel gates on the frozen adapted model, task loss plus
`alpha * (s - target)^2`, the temperature annealed and the target ramped up from 0 over the run.

With `train_lora`, a small LoRA on the gated layer stacks trains with the gates, so that the modules
that stay can take over the work of the ones that go. With only decoder gates and no encoder LoRA, the
encoder runs without autograd: that is most of the compute saved."""

from __future__ import annotations

import torch
from torch import Tensor

from ctxprune.gating.predictor import GateContext, GatePredictor
from ctxprune.gating.skip import SoftGates
from ctxprune.gating.sparsity import SparsityTarget, sparsity_loss
from ctxprune.gating.straight_through import TemperatureSchedule, apply_forced, straight_through_gates
from ctxprune.models.whisper import STACK_PREFIX, GatedWhisper
from ctxprune.models.whisper_costs import whisper_gate_space
from ctxprune.models.whisper_pruning import pooled_encoder, pooled_log_mel, whisper_predictor_config
from ctxprune.train.config import TrainConfig
from ctxprune.train.objective import decoder_loss

LANGUAGES = ["en", "de", "fr", "es", "it"]


def sparsity_targets(config: TrainConfig) -> list[SparsityTarget]:
    if config.where == "both" and config.separate_targets:
        return [SparsityTarget(STACK_PREFIX[s], config.target) for s in ("encoder", "decoder")]
    return [SparsityTarget(STACK_PREFIX[config.where], config.target)]


def gated_stacks(where: str) -> list[str]:
    return ["encoder", "decoder"] if where == "both" else [where]


def build_predictor(gw: GatedWhisper, config: TrainConfig) -> GatePredictor:
    space = whisper_gate_space(gw)
    frozen = [n for n in space.names if (config.where == "encoder" and n.startswith("dec."))]
    frozen += [n for n in space.names if (config.where == "decoder" and n.startswith("enc."))]
    predictor_config = whisper_predictor_config(
        gw.config, space, LANGUAGES, context=list(config.context), hidden=config.hidden, force_keep=frozen
    )
    return GatePredictor(predictor_config)


def _forced_gates(values: Tensor, predictor: GatePredictor) -> Tensor:
    return apply_forced(values, predictor.force_keep, predictor.force_skip)


class GateTask:
    """One training step of a gate predictor: returns the loss and what to log."""

    def __init__(self, gw: GatedWhisper, predictor: GatePredictor, config: TrainConfig):
        self.gw = gw
        self.predictor = predictor
        self.config = config
        self.targets = sparsity_targets(config)
        self.schedule = TemperatureSchedule(config.tau_start, config.tau_end, config.steps)
        self.encoder_grad = config.where != "decoder"

    def noise_at(self, step: int) -> float:
        """Full gate noise while the target rises, then linearly down to none for the last steps."""
        start = self.config.target_warmup
        end = self.config.steps * (1 - self.config.deterministic_tail)
        if step <= start or end <= start:
            return 1.0 if step < end else 0.0
        return max(0.0, 1 - (step - start) / (end - start))

    def targets_at(self, step: int) -> list[SparsityTarget]:
        ramp = min(1.0, (step + 1) / self.config.target_warmup) if self.config.target_warmup else 1.0
        return [SparsityTarget(t.prefix, t.target * ramp) for t in self.targets]

    def loss(self, batch: dict, step: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        p, names = self.predictor, list(self.predictor.space.names)
        tau, noise = self.schedule(step), self.noise_at(step)
        device = p.early_head.weight.device
        feats, frames = batch["features"].to(device), batch["frames"]
        ctx = GateContext(batch["tasks"], batch["languages"], audio=pooled_log_mel(feats, frames))
        with torch.autocast(device.type, enabled=False):  # gates in fp32: bf16 sigmoids saturate to exact 0/1
            early = straight_through_gates(p.early_logits(ctx), tau, generator, noise)
        values = torch.ones(len(ctx.task), len(names), device=device).index_copy(1, p.early_index, early)
        values = _forced_gates(values, p)
        with torch.set_grad_enabled(self.encoder_grad):
            encoder_out = self.gw.encode(
                feats.to(next(self.gw.model.parameters()).dtype), SoftGates(values, names)
            )
        ctx.encoder = pooled_encoder(encoder_out.detach().float(), frames)
        with torch.autocast(device.type, enabled=False):
            logits = p(ctx)
            late = straight_through_gates(logits[:, p.late_index], tau, generator, noise)
        values = _forced_gates(values.index_copy(1, p.late_index, late), p)
        labels = batch["labels"].to(device)
        task = decoder_loss(
            self.gw, encoder_out, batch["decoder_input_ids"].to(device), labels, SoftGates(values, names)
        )
        with torch.autocast(device.type, enabled=False):
            # the value is the sparsity that ran, the gradient that of the expected sparsity: the penalty
            # stops pulling only when the executed masks (at the end, the inference masks) are on target
            keep_prob = _forced_gates(torch.sigmoid(logits), p)
            keep = values.detach() + keep_prob - keep_prob.detach()
            targets = self.targets_at(step)
            by, alpha = self.config.sparsity_by, self.config.alpha
            sparse, executed = sparsity_loss(keep, p.space, targets, by, alpha)
        _, expected = sparsity_loss(keep_prob.detach(), p.space, targets, by)
        logs = {"task_loss": task.item(), "sparsity_loss": sparse.item(), "tau": tau, "noise": noise}
        logs["target"] = targets[0].target
        logs.update({f"expected_s_{k}": v for k, v in expected.items()})
        logs.update({f"sampled_s_{k}": v for k, v in executed.items()})
        return task + sparse, logs
