"""Gate-predictor training: straight-through Gumbel gates on the frozen reference model (Whisper base, or
base with a corpus adapter merged), a task loss plus `alpha * (s - target)^2`, the temperature annealed
and the target ramped up from 0 over the run. The task loss is distillation from the dense model
(train/distill.py) or, with kl_weight = hidden_weight = 0, cross-entropy on the references.

With `train_lora`, a small LoRA on the gated layer stacks trains with the gates, so that the modules
that stay can take over the work of the ones that go. With only decoder gates and no encoder LoRA, the
encoder runs without autograd: that is most of the compute saved."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor
from torch.profiler import record_function
from transformers import WhisperForConditionalGeneration

from ctxprune.data.dataset import batch_features
from ctxprune.data.manifest import read_manifest
from ctxprune.data.speaker import SPEAKER, SPEAKER_DIM
from ctxprune.data.synth import LANGUAGES
from ctxprune.errors import CtxpruneError
from ctxprune.eval.module_times import gate_time_costs, read_gate_times, write_gate_times
from ctxprune.eval.suite import device_name, rows_sparsity
from ctxprune.gating.policy import Masks, StraightThrough, encoder_then_late, policy_for, two_stage
from ctxprune.gating.predictor import GateContext, GatePredictor
from ctxprune.gating.skip import SoftGates
from ctxprune.gating.sparsity import SparsityTarget, sparsity_loss
from ctxprune.gating.straight_through import TemperatureSchedule
from ctxprune.models.whisper import STACK_PREFIX, GatedWhisper, whisper_gate_names
from ctxprune.models.whisper_context import pooled_encoder, pooled_log_mel, whisper_predictor_config
from ctxprune.models.whisper_costs import whisper_gate_space
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.pipeline import Pipeline
from ctxprune.stack import GATE_LORA, merge_adapter, record_base_adapter
from ctxprune.train.adapt import add_lora, load_gate_lora, save_half_precision_lora
from ctxprune.train.calibration import calibrate_predictor, calibration_record
from ctxprune.train.config import TrainConfig
from ctxprune.train.distill import DistillWeights, distillation_loss, greedy_sequences
from ctxprune.train.objective import decoder_loss

# an on-policy decode stops this many tokens after the batch's longest pseudo-label (a looping student
# would otherwise run to the cap, and every sequence of the step is as wide as the widest)
OWN_OUTPUT_SLACK = 8


def sparsity_targets(config: TrainConfig) -> list[SparsityTarget]:
    """One target over the gated stacks, or with `encoder_target` the encoder's and the decoder's."""
    if config.encoder_target is not None:
        return [
            SparsityTarget(STACK_PREFIX["encoder"], config.encoder_target),
            SparsityTarget(STACK_PREFIX["decoder"], config.target),
        ]
    return [SparsityTarget(STACK_PREFIX[config.where], config.target)]


def inference_dtype(device: torch.device) -> torch.dtype:
    """The precision the shipped set will run at there: fp16 on a GPU (the CUDA-graph runtime's), fp32 on
    the CPU."""
    return torch.float16 if device.type == "cuda" else torch.float32


def measured_times(
    model: WhisperForConditionalGeneration,
    special: WhisperTokens,
    shared: str | None = None,
    elsewhere: bool = False,
) -> tuple[tuple, str]:
    """Branch times of `model` (before the training LoRA is added) at batch 1 on its device, and where
    they were measured ("GPU name, float16"). They are timed on a copy in the precision inference runs
    at: the fp32 training model with its LoRA priced a cross-attention at three self-attentions (H200),
    while in fp16 a self-attention costs more (docs/performance.md). Under torchrun every process takes
    rank 0's, so that all weigh alike. With `shared` (a JSON file), runs that share it weigh alike too:
    the first measures and writes it, the others read it (runs started side by side on one GPU would
    otherwise time each other's work). `elsewhere`: `shared` may come from another device (a run
    finished on another machine than the one it trained on weighs the times it trained with)."""
    device = next(model.parameters()).device
    dtype = inference_dtype(device)
    where = f"{device_name(str(device))}, {str(dtype).removeprefix('torch.')}"
    names = whisper_gate_names(model.config)
    if shared and Path(shared).is_file():
        return read_gate_times(Path(shared), names, None if elsewhere else where)
    timed = GatedWhisper(copy.deepcopy(model).to(dtype).eval())
    times = [gate_time_costs(timed, special.prompt("en", "transcribe"))]
    del timed
    if dist.is_initialized():
        dist.broadcast_object_list(times, src=0)
    if shared and (not dist.is_initialized() or dist.get_rank() == 0):
        write_gate_times(Path(shared), names, times[0], where)
    return times[0], where


def gated_stacks(where: str) -> list[str]:
    return ["encoder", "decoder"] if where == "both" else [where]


def build_predictor(
    gw: GatedWhisper, config: TrainConfig, times: tuple[tuple, str] | None = None
) -> GatePredictor:
    """The predictor over `gw`'s gates; with `times` (`measured_times`), latency-weighted."""
    space = whisper_gate_space(gw)
    if times is not None:
        space = space.with_times(*times)
    frozen = [n for n in space.names if not n.startswith(STACK_PREFIX[config.where])]  # gates not trained
    predictor_config = whisper_predictor_config(
        gw.config,
        space,
        list(LANGUAGES),
        context=list(config.context),
        hidden=config.hidden,
        force_keep=frozen,
        vectors={SPEAKER: SPEAKER_DIM} if SPEAKER in config.context else {},
    )
    return GatePredictor(predictor_config)


class GateTask:
    """Gate training: the predictor (and, with `train_lora`, a LoRA of its own) on the frozen reference
    model (the base, or the base with a corpus adapter merged). Owns its parameter groups, the
    calibration at the start of the deterministic tail, its artifact (`predictor/`) and its card fields."""

    artifact = "predictor"

    def __init__(
        self,
        model: WhisperForConditionalGeneration,
        config: TrainConfig,
        special: WhisperTokens,
        times_elsewhere: bool = False,
    ):
        if config.adapter:  # the adapted model is the reference: merged, frozen
            model = merge_adapter(model, config.adapter)
        # each gate weighs its time at batch 1 on this device, timed before the LoRA below exists
        times = (
            measured_times(model, special, config.branch_times, times_elsewhere)
            if config.sparsity_by == "latency"
            else None
        )
        # a second, small LoRA on the gated stacks only, trained with the gates
        self.peft = add_lora(model, config, stacks=gated_stacks(config.where)) if config.train_lora else None
        self.gw = GatedWhisper(self.peft.base_model.model if self.peft else model)
        self.predictor = build_predictor(self.gw, config, times).to(self.gw.device)
        if config.start_from:
            self._start_from(Path(config.start_from))
        self.policy = policy_for(self.predictor)
        self.config, self.special = config, special
        self.targets = sparsity_targets(config)
        self.schedule = TemperatureSchedule(config.tau_start, config.tau_end, config.steps)
        self.encoder_grad = config.where != "decoder"
        # calibrated at the start of the deterministic tail; the shift search holds one target, so a run
        # with the encoder's own target is not calibrated (its penalty alone brings it there)
        self.calibrates = config.encoder_target is None
        self.distills = config.kl_weight > 0 or config.hidden_weight > 0
        self.weights = DistillWeights(
            config.kl_weight, config.label_weight, config.hidden_weight, config.temperature
        )

    def _start_from(self, gate_set: Path) -> None:
        """Continue from a trained gate set: its predictor and its LoRA (a re-tune after calibration)."""
        trained = GatePredictor.from_pretrained(gate_set, space=self.predictor.space)
        mine, theirs = self.predictor.config, trained.config
        if (mine.context, mine.force_keep) != (theirs.context, theirs.force_keep):
            raise CtxpruneError(
                f"{gate_set}: trained with context {theirs.context} on other gates; "
                "give the run the same --context and --where"
            )
        self.predictor.load_state_dict(trained.state_dict())
        if self.peft is not None:
            load_gate_lora(self.peft, gate_set / GATE_LORA)

    def named_parameters(self) -> dict[str, Tensor]:
        named = {f"predictor.{n}": p for n, p in self.predictor.named_parameters()}
        if self.peft is not None:
            named.update({f"lora.{n}": p for n, p in self.peft.named_parameters() if "lora_" in n})
        return named

    def gate_bias_lr(self) -> float:
        """`lr`, but at least enough for a bias to travel twice its initial keep logit before the
        deterministic tail: Adam moves a parameter by about its rate per step, and a static gate can
        only close through its bias (at 400 steps and lr 1e-2 the static sets' biases had not crossed
        zero when the tail began, so calibration alone chose their masks)."""
        c = self.config
        return max(c.lr, 2 * self.predictor.config.initial_keep_logit / max(1, c.tail_start))

    def parameter_groups(self) -> list[dict]:
        """The gate biases at `gate_bias_lr()`, the predictor's context pathway at `lr *
        context_lr_scale`, and a joint LoRA at its own `lora_lr`. The predictor groups freeze once the
        gates are calibrated."""
        c, named = self.config, self.named_parameters()
        predictor = [(n, p) for n, p in named.items() if n.startswith("predictor.")]
        groups = [
            {
                "name": "gate_biases",
                "params": [p for n, p in predictor if n.endswith("_bias")],
                "base_lr": self.gate_bias_lr(),
            },
            {
                "name": "predictor_context",
                "params": [p for n, p in predictor if not n.endswith("_bias")],
                "base_lr": c.lr * c.context_lr_scale,
            },
        ]
        for group in groups:
            group["freezes_after_calibration"] = True
        lora = [p for n, p in named.items() if n.startswith("lora.")]
        if lora:
            groups.append({"name": "lora", "params": lora, "base_lr": c.lora_lr})
        return groups

    def train(self) -> None:
        if self.peft is not None:
            self.peft.train()
        self.predictor.train()

    def pipeline(self, special: WhisperTokens) -> Pipeline:
        """The gated model with the inference masks, for dev evaluations."""
        self.gw.model.eval()
        self.predictor.eval()
        return Pipeline(self.gw, special, self.policy)

    def calibrate(self, device: torch.device) -> dict:
        """Shift the trained gates' logits so that dev sparsity lands on target (gating/logit_shifts.py)."""
        self.gw.model.eval()
        self.predictor.eval()
        c = self.config
        examples = read_manifest(Path(c.data), "dev")
        result = calibrate_predictor(
            self.policy, self.gw, Path(c.data), examples, c.target, c.where, c.sparsity_by
        )
        return calibration_record(result, self.predictor.space, len(examples), device)

    def save(self, directory: Path) -> None:
        self.predictor.save_pretrained(directory)
        if self.config.adapter:
            record_base_adapter(directory, self.config.adapter)
        if self.peft is not None:
            save_half_precision_lora(self.peft, directory / GATE_LORA)

    def card_fields(self, dev: dict) -> dict:
        c = self.config
        space = self.predictor.space
        fields = {
            "kind": "context" if c.context else "static",
            "target_sparsity": c.target,
            "achieved_sparsity": rows_sparsity(dev, space, c.where, c.sparsity_by),
        }
        if space.times is not None:  # what "latency" weighed: ms per gate at the reference length
            weights = space.weights("latency")
            fields["branch_ms"] = {
                "device": space.times_device,
                "reference_tokens": space.reference_tokens,
                "gates": {n: round(w, 4) for n, w in zip(space.names, weights, strict=True)},
            }
        return fields

    def _teacher_mode(self):
        """The model as the teacher: the gate LoRA off (with no gates given, every module runs)."""
        return self.peft.disable_adapter() if self.peft is not None else nullcontext()

    def _teacher_encoder(self, feats: Tensor, student: Tensor):
        """The dense encoder output: the student's own when neither gates nor the LoRA touch the encoder."""
        if self.encoder_grad:
            return lambda: self.gw.encode(feats)
        return lambda: student.detach()

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

    def onpolicy_at(self, step: int) -> bool:
        """Whether the student decodes its own outputs at `step`: every `onpolicy_every`-th step once
        the target has stopped rising (before, the student is close to the teacher, and a decode costs
        more than the rest of a step)."""
        every = self.config.onpolicy_every
        return self.distills and every > 0 and step >= self.config.target_warmup and step % every == 0

    def own_outputs(self, batch: dict, encoder_out: Tensor, keep: Tensor) -> tuple[dict, dict]:
        """The student's greedy outputs under the hard masks `keep` it trains with at this step, as
        `own_input_ids`/`own_labels` for `join_sequences`, and for the log their length against the
        teacher's and the share that ended. Decoded in the model's own precision, without dropout, at
        most `OWN_OUTPUT_SLACK` tokens past the longest pseudo-label."""
        model = self.gw.model
        taught = (batch["teacher_labels"] != -100).sum(1)  # pseudo-label tokens and end-of-text
        cap = int(taught.max()) + OWN_OUTPUT_SLACK
        training = model.training
        model.eval()
        try:
            with torch.autocast(encoder_out.device.type, enabled=False):
                source = encoder_out.detach().to(next(model.parameters()).dtype)
                ids, labels, ended = greedy_sequences(
                    self.gw,
                    self.special,
                    source,
                    keep.detach() > 0.5,
                    batch["languages"],
                    batch["tasks"],
                    cap,
                )
        finally:
            model.train(training)
        logs = {
            "own_length_ratio": int((labels != -100).sum()) / int(taught.sum()),
            "own_ended": float(ended.float().mean()),
        }
        return {"own_input_ids": ids, "own_labels": labels}, logs

    def loss(self, batch: dict, step: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        """The task loss under straight-through gates plus `alpha * (s - target)^2`, and what to log."""
        p, names = self.predictor, list(self.predictor.space.names)
        tau, noise = self.schedule(step), self.noise_at(step)
        device = p.early_head.weight.device
        with record_function("phase: log-mel"):
            feats, frames = batch_features(batch, device, self.gw.config.num_mel_bins), batch["frames"]
        vectors = {name: v.to(device) for name, v in batch.get("vectors", {}).items()}
        ctx = GateContext(batch["tasks"], batch["languages"], pooled_log_mel(feats, frames), vectors=vectors)
        policy = self.policy.in_mode(StraightThrough(tau, noise, generator))
        dtype = next(self.gw.model.parameters()).dtype

        def encoder(early: Masks) -> Tensor:
            with torch.set_grad_enabled(self.encoder_grad), record_function("phase: encoder"):
                return self.gw.encode(feats.to(dtype), SoftGates(early.values, names))

        masks, encoder_out = two_stage(
            policy, ctx, encoder_then_late(encoder), lambda out: pooled_encoder(out.detach().float(), frames)
        )
        own_logs = {}
        if self.onpolicy_at(step):
            with record_function("phase: own outputs"):
                own, own_logs = self.own_outputs(batch, encoder_out, masks.values)
            batch = {**batch, **own}
        if self.distills:
            task, logs = distillation_loss(
                self.gw,
                batch,
                encoder_out,
                self._teacher_encoder(feats.to(dtype), encoder_out),
                masks.values,
                self.weights,
                self._teacher_mode,
            )
        else:
            labels = batch["labels"].to(device)
            gates = SoftGates(masks.values, names)
            task = decoder_loss(self.gw, encoder_out, batch["decoder_input_ids"].to(device), labels, gates)
            logs = {}
        with torch.autocast(device.type, enabled=False):
            # the value is the sparsity that ran, the gradient that of the expected sparsity: the penalty
            # stops pulling only when the executed masks (at the end, the inference masks) are on target
            keep = masks.values.detach() + masks.keep_prob - masks.keep_prob.detach()
            targets = self.targets_at(step)
            by, alpha = self.config.sparsity_by, self.config.alpha
            budgets = batch["tasks"] if self.config.budget_per == "task" else None
            sparse, executed = sparsity_loss(keep, p.space, targets, by, alpha, budgets)
        _, expected = sparsity_loss(masks.keep_prob.detach(), p.space, targets, by)
        logs.update(own_logs)
        logs.update({"task_loss": task.item(), "sparsity_loss": sparse.item(), "tau": tau, "noise": noise})
        logs["target"] = targets[0].target
        logs.update({f"expected_s_{k}": v for k, v in expected.items()})
        logs.update({f"sampled_s_{k}": v for k, v in executed.items()})
        return task + sparse, logs
