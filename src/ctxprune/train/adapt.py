"""LoRA adaptation (peft) of the base model to the corpus, base weights frozen.

peft injects LoRA layers into the upstream modules in place, so `GatedWhisper`, which calls those
modules, runs the adapted model unchanged. Adapters are saved as safetensors by peft."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import Tensor
from transformers import WhisperForConditionalGeneration

from ctxprune.errors import CtxpruneError
from ctxprune.models.whisper import GatedWhisper
from ctxprune.train.config import TrainConfig
from ctxprune.train.objective import teacher_forced_loss


def add_lora(model: WhisperForConditionalGeneration, config: TrainConfig) -> PeftModel:
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        bias="none",
    )
    return get_peft_model(model, lora)


def load_adapter(
    model: WhisperForConditionalGeneration, adapter: str | Path, trainable: bool = False
) -> PeftModel:
    path = Path(adapter)
    if not (path / "adapter_config.json").is_file() or not (path / "adapter_model.safetensors").is_file():
        raise CtxpruneError(
            f"{path}: not a LoRA adapter (needs adapter_config.json and adapter_model.safetensors)"
        )
    return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)


class AdaptTask:
    """One training step of LoRA adaptation: the dense model's teacher-forced loss."""

    def __init__(self, gw: GatedWhisper):
        self.gw = gw

    def loss(self, batch: dict, step: int, generator: torch.Generator) -> tuple[Tensor, dict]:
        p = next(self.gw.model.parameters())
        loss = teacher_forced_loss(
            self.gw,
            batch["features"].to(p.device, p.dtype),
            batch["decoder_input_ids"].to(p.device),
            batch["labels"].to(p.device),
        )
        return loss, {"task_loss": loss.item()}
