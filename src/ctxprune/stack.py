"""What a pruned Whisper is made of (a `StackSpec`): the base weights, the corpus LoRA adapter, and a gate
set; loaded, it is a `Stack` whose pipeline decodes under the gate set's mask policy.

A gate set is a directory holding a gate predictor and, when it was trained jointly with the gates, a
small LoRA of its own (in `lora/`). Both LoRAs are merged into the weights at load time, so the pruned
model runs plain upstream modules with no LoRA overhead. A gate set records the sha256 of the adapter it
was trained on and refuses to load on top of another one. A gate set with its own LoRA also keeps its
teacher (the weights before that merge): where the loop guard stops a pruned row, the teacher decodes it
again (`runtime.pipeline`), since the student with every gate open is not the dense model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import PeftModel
from transformers import WhisperForConditionalGeneration

from ctxprune import assets
from ctxprune.errors import CtxpruneError
from ctxprune.gating.policy import DenseMasks, MaskPolicy, policy_for
from ctxprune.gating.predictor import GatePredictor
from ctxprune.gating.space import GateSpace
from ctxprune.models.whisper import GatedWhisper
from ctxprune.models.whisper_costs import whisper_gate_space
from ctxprune.paths import write_json_atomic
from ctxprune.runtime.decoding import GREEDY, DecodeOptions
from ctxprune.runtime.pipeline import GatedResult, Pipeline

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
    with quiet_peft():
        return PeftModel.from_pretrained(model, str(check_adapter(adapter))).merge_and_unload()


@contextmanager
def quiet_peft():
    """peft asks transformers a deprecated question; nothing a user can change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def record_base_adapter(gate_set: str | Path, adapter: str | Path) -> None:
    write_json_atomic(Path(gate_set) / BASE_ADAPTER, {"adapter_sha256": adapter_sha256(adapter)})


def _required_adapter(gate_set: Path) -> str | None:
    path = gate_set / BASE_ADAPTER
    return json.loads(path.read_text())["adapter_sha256"] if path.is_file() else None


@dataclass(frozen=True)
class StackSpec:
    """Everything that makes a loaded model: the base model, the corpus adapter merged into it, a gate
    set, and where and how it runs."""

    model: str | None = None  # a prepared model dir or hub id; None: the prepared Whisper base
    adapter: Path | None = None  # a LoRA adapter merged into the base weights
    gates: Path | None = None  # a gate set: its predictor and its own LoRA
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    int8: bool = False  # dynamic int8 quantization of every Linear layer (CPU only)

    def with_gates(self, gates: Path | None) -> StackSpec:
        return replace(self, gates=gates)


@dataclass
class Stack:
    """A loaded model: the upstream model and tokenizer, the gated wrapper, its measured gate space, the
    mask policy of its gate set (dense without one) and the runtime pipeline over them."""

    loaded: assets.LoadedWhisper
    gated: GatedWhisper
    space: GateSpace  # measured before any quantization
    pipeline: Pipeline

    @property
    def policy(self) -> MaskPolicy:
        return self.pipeline.policy

    def with_policy(self, policy: MaskPolicy) -> Stack:
        """The same weights decoding under another policy (a random baseline, say)."""
        teacher = self.pipeline.teacher if self.pipeline.teacher is not self.gated else None
        pipeline = Pipeline(self.gated, self.loaded.tokens, policy, teacher)
        return Stack(self.loaded, self.gated, self.space, pipeline)

    def run(
        self,
        features: torch.Tensor,
        frames: torch.Tensor,
        tasks: list[str],
        languages: list[str | None],
        vectors: dict[str, torch.Tensor] | None = None,
        options: DecodeOptions = GREEDY,
        prefixes: list[list[int]] | None = None,
    ) -> GatedResult:
        """Decode a batch of log-mel features (see `runtime.pipeline.Pipeline.run`)."""
        return self.pipeline.run(features, frames, tasks, languages, vectors, options, prefixes)


def load_stack(spec: StackSpec = StackSpec(), teacher: GatedWhisper | None = None) -> Stack:
    """Base model, then the adapter merged, then the gate set's own LoRA merged and its predictor.
    With `int8`, every Linear layer is quantized dynamically (torch.ao, CPU only) after the merges; the
    gate costs are measured before, since FlopCounterMode does not see quantized Linear layers.
    `teacher`: the dense model of this spec without gates, already loaded (`load_stack(spec.with_gates(None))
    .gated`), for the loop guard to fall back to; a server that loads many sets shares one instead of
    holding a copy per set."""
    if spec.int8 and str(spec.device) != "cpu":
        raise CtxpruneError("int8 dynamic quantization runs on CPU only; drop --int8 or use --device cpu")
    gate_set = Path(spec.gates) if spec.gates is not None else None
    adapter = spec.adapter
    if gate_set is not None:
        required = _required_adapter(gate_set)
        if required and adapter is None:
            raise CtxpruneError(f"{gate_set} was trained on a LoRA adapter; pass it with --adapter DIR")
        if required and adapter_sha256(check_adapter(adapter)) != required:
            raise CtxpruneError(f"{gate_set} was trained on another adapter than {adapter} (sha256 differs)")
    loaded = assets.load(spec.model, device="cpu", dtype=torch.float32)  # merge in fp32, then move and cast
    hf = loaded.model
    if adapter is not None:
        hf = merge_adapter(hf, adapter)
    # the dense model the loop guard falls back to: where the set merges its own LoRA, the weights before
    # that merge (given, or copied here); else `gated` with every gate open
    own_lora = gate_set is not None and (gate_set / GATE_LORA).is_dir()
    copied = copy.deepcopy(hf) if own_lora and teacher is None else None
    if own_lora:
        hf = merge_adapter(hf, gate_set / GATE_LORA)
    loaded.model = _placed(hf, spec)
    space = whisper_gate_space(GatedWhisper(loaded.model))
    if spec.int8:
        loaded.model = _quantized(loaded.model)
    gated = GatedWhisper(loaded.model)
    if not own_lora:
        teacher = None
    elif copied is not None:
        teacher = GatedWhisper(_quantized(_placed(copied, spec)) if spec.int8 else _placed(copied, spec))
    policy: MaskPolicy = DenseMasks(space)
    if gate_set is not None:
        predictor = GatePredictor.from_pretrained(gate_set, space).to(spec.device)
        if predictor.space.times is not None:  # trained by latency: its measured times weigh sparsity
            space = space.with_times(predictor.space.times, predictor.space.times_device)
        policy = policy_for(predictor)
        policy.space = space  # costs as measured on this model now: the same table as dense's
    return Stack(loaded, gated, space, Pipeline(gated, loaded.tokens, policy, teacher))


def _placed(model: WhisperForConditionalGeneration, spec: StackSpec) -> WhisperForConditionalGeneration:
    return model.to(spec.device, spec.dtype).eval()


def _quantized(model: WhisperForConditionalGeneration) -> WhisperForConditionalGeneration:
    with warnings.catch_warnings():  # torch's notices that the API moves to torchao: nothing a user can do
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
