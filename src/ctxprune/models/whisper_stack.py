"""What a pruned Whisper is made of: the base weights, the corpus LoRA adapter, and a gate set.

A gate set is a directory holding a gate predictor and, when it was trained jointly with the gates, a
small LoRA of its own (in `lora/`). Both LoRAs are merged into the weights at load time, so the pruned
model runs plain upstream modules with no LoRA overhead. A gate set records the sha256 of the adapter it
was trained on and refuses to load on top of another one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import WhisperForConditionalGeneration

from ctxprune import assets
from ctxprune.errors import CtxpruneError
from ctxprune.gating.predictor import GatePredictor
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_costs import whisper_gate_space
from ctxprune.models.whisper_pruning import PrunedWhisper
from ctxprune.paths import write_json_atomic
from ctxprune.runtime.decoding import GREEDY, DecodeOptions

ADAPTER_WEIGHTS = "adapter_model.safetensors"
GATE_LORA = "lora"  # inside a gate set: the LoRA trained jointly with its predictor
BASE_ADAPTER = "base_adapter.json"  # inside a gate set: which adapter it was trained on


def adapter_sha256(adapter: str | Path) -> str:
    return hashlib.sha256((Path(adapter) / ADAPTER_WEIGHTS).read_bytes()).hexdigest()


def check_adapter(adapter: str | Path) -> Path:
    path = Path(adapter)
    if not (path / "adapter_config.json").is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise CtxpruneError(f"{path}: not a LoRA adapter (needs adapter_config.json and {ADAPTER_WEIGHTS})")
    return path


def merge_adapter(
    model: WhisperForConditionalGeneration, adapter: str | Path
) -> WhisperForConditionalGeneration:
    """Fold a peft LoRA into the weights and return the plain upstream model."""
    return PeftModel.from_pretrained(model, str(check_adapter(adapter))).merge_and_unload()


def record_base_adapter(gate_set: str | Path, adapter: str | Path) -> None:
    write_json_atomic(Path(gate_set) / BASE_ADAPTER, {"adapter_sha256": adapter_sha256(adapter)})


def _required_adapter(gate_set: Path) -> str | None:
    path = gate_set / BASE_ADAPTER
    return json.loads(path.read_text())["adapter_sha256"] if path.is_file() else None


@dataclass
class WhisperStack:
    loaded: assets.LoadedWhisper
    pruned: PrunedWhisper

    @property
    def gated(self) -> GatedWhisper:
        return self.pruned.gated


def load_stack(
    model: str | None = None,
    adapter: str | Path | None = None,
    gates: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    int8: bool = False,
    decoding: DecodeOptions = GREEDY,
) -> WhisperStack:
    """Base model, then the adapter merged, then the gate set's own LoRA merged and its predictor.
    `int8` quantizes every Linear layer dynamically (torch.ao, CPU only) after the merges. `decoding`
    chooses greedy or beam search and whether CUDA decodes through captured graphs."""
    if int8 and str(device) != "cpu":
        raise CtxpruneError("int8 dynamic quantization runs on CPU only; drop --int8 or use --device cpu")
    gate_set = Path(gates) if gates is not None else None
    if gate_set is not None:
        required = _required_adapter(gate_set)
        if required and adapter is None:
            raise CtxpruneError(f"{gate_set} was trained on a LoRA adapter; pass it with --adapter DIR")
        if required and adapter_sha256(check_adapter(adapter)) != required:
            raise CtxpruneError(f"{gate_set} was trained on another adapter than {adapter} (sha256 differs)")
    loaded = assets.load(model, device="cpu", dtype=torch.float32)  # merge in fp32, then move and cast
    hf = loaded.model
    if adapter is not None:
        hf = merge_adapter(hf, adapter)
    predictor = None
    if gate_set is not None and (gate_set / GATE_LORA).is_dir():
        hf = merge_adapter(hf, gate_set / GATE_LORA)
    loaded.model = hf.to(device, dtype).eval()
    if int8:
        # gate costs are FLOPs of the architecture; measure them before quantization, which hides the
        # quantized Linear layers from FlopCounterMode (the space is cached per model shape)
        whisper_gate_space(GatedWhisper(loaded.model))
        loaded.model = torch.ao.quantization.quantize_dynamic(
            loaded.model, {torch.nn.Linear}, dtype=torch.qint8
        )
    gated = GatedWhisper(loaded.model)
    if gate_set is not None:
        predictor = GatePredictor.from_pretrained(gate_set, whisper_gate_space(gated)).to(device)
    return WhisperStack(loaded, PrunedWhisper(gated, loaded.tokens, predictor, decoding=decoding))
