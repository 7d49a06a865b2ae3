"""LoRA adaptation (peft) of the base model to the corpus, base weights frozen.

peft injects LoRA layers into the upstream modules in place, so `GatedWhisper`, which calls those
modules, runs the adapted model unchanged. Adapters are saved as safetensors by peft."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import WhisperForConditionalGeneration

from ctxprune.data.dataset import batch_features
from ctxprune.errors import CtxpruneError
from ctxprune.gating.policy import DenseMasks
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_costs import whisper_gate_space
from ctxprune.models.whisper_tokens import WhisperTokens
from ctxprune.runtime.pipeline import Pipeline
from ctxprune.stack import ADAPTER_WEIGHTS, check_adapter, quiet_peft
from ctxprune.train.config import TrainConfig
from ctxprune.train.objective import teacher_forced_loss


def add_lora(
    model: WhisperForConditionalGeneration, config: TrainConfig, stacks: list[str] | None = None
) -> PeftModel:
    """LoRA on `config.lora_targets`; with `stacks` (encoder, decoder) only in those layer stacks."""
    targets: list[str] | str = list(config.lora_targets)
    if stacks:
        targets = rf"model\.({'|'.join(stacks)})\.layers\.\d+\.(.*\.)?({'|'.join(config.lora_targets)})"
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
    )
    with quiet_peft():
        return get_peft_model(model, lora)


def load_adapter(
    model: WhisperForConditionalGeneration, adapter: str | Path, trainable: bool = False
) -> PeftModel:
    with quiet_peft():
        return PeftModel.from_pretrained(model, str(check_adapter(adapter)), is_trainable=trainable)


class AdaptTask:
    """LoRA adaptation of the dense model: the teacher-forced loss; owns its LoRA, its parameter group,
    its artifact (`adapter/`) and its card fields."""

    artifact = "adapter"
    calibrates = False
    distills = False

    def __init__(self, model: WhisperForConditionalGeneration, config: TrainConfig):
        self.config = config
        self.peft = (
            load_adapter(model, config.adapter, trainable=True) if config.adapter else add_lora(model, config)
        )
        self.gw = GatedWhisper(self.peft.base_model.model)
        self.predictor = None

    def named_parameters(self) -> dict[str, Tensor]:
        """What trains (and what a checkpoint holds)."""
        return {n: p for n, p in self.peft.named_parameters() if p.requires_grad}

    def parameter_groups(self) -> list[dict]:
        return [{"name": "lora", "params": list(self.named_parameters().values()), "base_lr": self.config.lr}]

    def train(self) -> None:
        self.peft.train()

    def pipeline(self, special: WhisperTokens) -> Pipeline:
        """The dense adapted model, for dev evaluations."""
        self.gw.model.eval()
        return Pipeline(self.gw, special, DenseMasks(whisper_gate_space(self.gw)))

    def loss(self, batch: dict, step: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        p = next(self.gw.model.parameters())
        loss = teacher_forced_loss(
            self.gw,
            batch_features(batch, p.device, self.gw.config.num_mel_bins).to(p.dtype),
            batch["decoder_input_ids"].to(p.device),
            batch["labels"].to(p.device),
        )
        return loss, {"task_loss": loss.item()}

    def save(self, directory: Path) -> None:
        self.peft.save_pretrained(str(directory))

    def card_fields(self, dev: dict) -> dict:
        return {"kind": "adapter", "target_sparsity": None, "achieved_sparsity": None}


def save_half_precision_lora(peft: PeftModel, directory: Path) -> None:
    """Save a LoRA with its weights in fp16 (half the size; they are merged in fp32 at load time)."""
    peft.save_pretrained(str(directory))
    weights = directory / ADAPTER_WEIGHTS
    tensors = {k: v.half() for k, v in load_file(str(weights)).items()}
    tmp = weights.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(weights)
    (directory / "README.md").unlink(missing_ok=True)  # peft's model-card stub


def load_gate_lora(peft: PeftModel, directory: Path) -> None:
    """Load a saved LoRA's weights into a PeftModel built with the same LoRA settings."""
    if not (directory / ADAPTER_WEIGHTS).is_file():
        raise CtxpruneError(f"{directory}: no LoRA weights ({ADAPTER_WEIGHTS}) to continue from")
    try:
        result = set_peft_model_state_dict(peft, load_file(str(directory / ADAPTER_WEIGHTS)))
    except RuntimeError as e:  # shapes differ: another rank
        raise CtxpruneError(
            f"{directory}: its LoRA does not fit this run ({str(e).splitlines()[0]})"
        ) from None
    if result.unexpected_keys:
        raise CtxpruneError(
            f"{directory}: its LoRA does not fit this run ({len(result.unexpected_keys)} unexpected "
            "weights); use the lora_rank, lora_targets and --where it was trained with"
        )
