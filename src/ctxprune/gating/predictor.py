"""The gate predictor: context in, one logit per gate out, once per utterance.

Context inputs (each switchable; none at all gives the "static" predictor, one learned mask):
- `task`, `language`: learned embeddings of the tags, each with an `unknown` bucket;
- `audio`: a pooled acoustic vector that exists before the model runs (e.g. log-mel mean and std);
- `encoder`: a pooled encoder output, read only by "late" gates (those after the encoder);
- any named caller vectors (a speaker embedding, say), declared with their sizes in the config.
Each input is projected to `hidden` and summed; a GELU and a linear head give each gate a context
term, bounded to +-`context_range` by a scaled tanh, which is added to the gate's own bias (and to
a per-gate `logit_shift`, which calibration sets after training). The bound
keeps the context pathway (hundreds of inputs, each moved by the optimizer) from driving the logits to
saturation, where no gradient reaches them; the bias alone is the static predictor. Early gates never
see the encoder input, so their mask can be decided before the encoder runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ctxprune.errors import CtxpruneError
from ctxprune.gating.space import GateSpace
from ctxprune.paths import write_bytes_atomic, write_json_atomic

BUILTIN_INPUTS = ("task", "language", "audio", "encoder")
CONFIG_FILE = "predictor.json"
WEIGHTS_FILE = "predictor.safetensors"


@dataclass
class PredictorConfig:
    space: GateSpace
    tasks: list[str]
    languages: list[str]
    audio_dim: int
    encoder_dim: int
    context: list[str] = field(default_factory=lambda: ["task", "language", "audio", "encoder"])
    vectors: dict[str, int] = field(default_factory=dict)
    late_prefix: str = ""  # names of the late gates (read the encoder output) start with it; "": none
    hidden: int = 64
    initial_keep_logit: float = 3.0
    context_range: float = 4.0
    logit_shift: list[float] | None = None  # per gate, added to its logit; set by gating/logit_shifts.py
    force_keep: list[str] = field(default_factory=list)
    force_skip: list[str] = field(default_factory=list)

    def __post_init__(self):
        unknown = [c for c in self.context if c not in BUILTIN_INPUTS and c not in self.vectors]
        if unknown:
            raise CtxpruneError(
                f"unknown context input(s) {unknown}; choose from {list(BUILTIN_INPUTS) + list(self.vectors)}"
            )
        bad = [n for n in self.force_keep + self.force_skip if n not in self.space.names]
        if bad:
            raise CtxpruneError(f"force-keep/skip names not in the gate space: {bad}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["space"] = self.space.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> PredictorConfig:
        return cls(**{**d, "space": GateSpace.from_json(d["space"])})


@dataclass
class GateContext:
    """Per-utterance context for a batch. Tags are strings (or their ids, `GatePredictor.tag_ids`);
    vectors are [batch, dim] tensors."""

    task: list[str] | Tensor
    language: list[str] | Tensor
    audio: Tensor | None = None
    encoder: Tensor | None = None
    vectors: dict[str, Tensor] = field(default_factory=dict)


class GatePredictor(nn.Module):
    def __init__(self, config: PredictorConfig):
        super().__init__()
        self.config = config
        c, h = config, config.hidden
        self.task_index = {t: i for i, t in enumerate(c.tasks)}
        self.language_index = {lang: i for i, lang in enumerate(c.languages)}
        self.task_embedding = nn.Embedding(len(c.tasks) + 1, h) if "task" in c.context else None
        self.language_embedding = nn.Embedding(len(c.languages) + 1, h) if "language" in c.context else None
        dims = {"audio": c.audio_dim, "encoder": c.encoder_dim, **c.vectors}
        self.projections = nn.ModuleDict(
            {
                name: nn.Sequential(nn.LayerNorm(dims[name]), nn.Linear(dims[name], h))
                for name in c.context
                if name in dims
            }
        )
        late = c.space.indices(c.late_prefix) if c.late_prefix else []
        self.register_buffer("late_index", torch.tensor(late, dtype=torch.long), persistent=False)
        self.register_buffer(
            "early_index",
            torch.tensor([i for i in range(len(c.space)) if i not in late], dtype=torch.long),
            persistent=False,
        )
        self.early_head = nn.Linear(h, len(self.early_index), bias=False)
        self.late_head = nn.Linear(h, len(self.late_index), bias=False)
        for head in (self.early_head, self.late_head):
            nn.init.normal_(head.weight, std=0.01)
        self.early_bias = nn.Parameter(torch.full((len(self.early_index),), c.initial_keep_logit))
        self.late_bias = nn.Parameter(torch.full((len(self.late_index),), c.initial_keep_logit))
        self._tag_id_cache: dict[tuple, Tensor] = {}
        self._shift_cache: tuple[tuple, Tensor] | None = None
        self.force_keep = [c.space.index(n) for n in c.force_keep]
        self.force_skip = [c.space.index(n) for n in c.force_skip]

    @property
    def space(self) -> GateSpace:
        return self.config.space

    def tag_ids(self, ctx: GateContext, device) -> tuple[Tensor, Tensor]:
        """(task ids, language ids) of a context on the device."""
        return self._tag_ids(ctx.task, self.task_index, device), self._tag_ids(
            ctx.language, self.language_index, device
        )

    def _tag_ids(self, tags: list[str] | Tensor, index: dict[str, int], device) -> Tensor:
        """Tag ids on the device, kept per distinct tag list (a host-to-device copy per request stalls
        the GPU stream behind the encoder). Ids already on the device pass through."""
        if isinstance(tags, Tensor):
            return tags
        key = (tuple(tags), id(index), device)
        if key not in self._tag_id_cache:
            if len(self._tag_id_cache) > 1024:
                self._tag_id_cache.clear()
            with torch.inference_mode(False):  # a normal tensor: training may reuse what inference cached
                ids = torch.tensor([index.get(t, len(index)) for t in tags], device=device)
            self._tag_id_cache[key] = ids
        return self._tag_id_cache[key]

    def _hidden(self, ctx: GateContext, with_encoder: bool) -> Tensor:
        device = self.early_head.weight.device
        h = torch.zeros(len(ctx.task), self.config.hidden, device=device)
        if self.task_embedding is not None:
            h = h + self.task_embedding(self._tag_ids(ctx.task, self.task_index, device))
        if self.language_embedding is not None:
            h = h + self.language_embedding(self._tag_ids(ctx.language, self.language_index, device))
        for name, proj in self.projections.items():
            if name == "encoder" and not with_encoder:
                continue
            value = (
                ctx.audio if name == "audio" else ctx.encoder if name == "encoder" else ctx.vectors.get(name)
            )
            if value is None:
                raise CtxpruneError(f"the gate predictor needs context input {name!r}, which was not given")
            h = h + proj(value.to(device, h.dtype))
        return nn.functional.gelu(h)

    def early_logits(self, ctx: GateContext) -> Tensor:
        """Logits of the early gates only ([batch, n_early]); needs no encoder output."""
        context_term = self.early_head(self._hidden(ctx, with_encoder=False))
        return self._bounded(context_term, self.early_bias, self.early_index)

    def late_logits(self, ctx: GateContext) -> Tensor:
        """Logits of the late gates only ([batch, n_late]); reads the pooled encoder output."""
        context_term = self.late_head(self._hidden(ctx, with_encoder=True))
        return self._bounded(context_term, self.late_bias, self.late_index)

    def _bounded(self, context_term: Tensor, bias: Tensor, index: Tensor) -> Tensor:
        r = self.config.context_range
        logits = bias + r * torch.tanh(context_term / r)
        if self.config.logit_shift is not None:
            logits = logits + self._shift(logits.device)[index]
        return logits

    def _shift(self, device: torch.device) -> Tensor:
        """`config.logit_shift` on the device, copied once per value (it changes only in calibration)."""
        key = (tuple(self.config.logit_shift), device)
        if self._shift_cache is None or self._shift_cache[0] != key:
            with torch.inference_mode(False):  # a normal tensor, as for the tag ids
                self._shift_cache = (key, torch.tensor(self.config.logit_shift, device=device))
        return self._shift_cache[1]

    def forward(self, ctx: GateContext) -> Tensor:
        """Logits for every gate, [batch, n_gates], in gate-space order."""
        early = self.early_logits(ctx)
        late = self.late_logits(ctx)
        out = early.new_empty(early.shape[0], len(self.space))
        out[:, self.early_index] = early
        out[:, self.late_index] = late
        return out

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{WEIGHTS_FILE}.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        write_bytes_atomic(directory / WEIGHTS_FILE, tmp.read_bytes())
        tmp.unlink()
        write_json_atomic(directory / CONFIG_FILE, self.config.to_json())

    @classmethod
    def from_pretrained(cls, directory: str | Path, space: GateSpace | None = None) -> GatePredictor:
        """Load a predictor; if `space` is given, refuse one built for a different gate space."""
        directory = Path(directory)
        if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise CtxpruneError(f"{directory}: not a gate predictor (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            config = PredictorConfig.from_json(json.loads((directory / CONFIG_FILE).read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CtxpruneError(f"{directory}/{CONFIG_FILE} is not a valid predictor config: {e}") from None
        if space is not None and config.space.fingerprint != space.fingerprint:
            raise CtxpruneError(
                f"{directory}: this predictor was built for gate space {config.space.model!r} "
                f"({len(config.space)} gates), not for this model's {space.model!r} ({len(space)} gates)"
            )
        predictor = cls(config)
        predictor.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return predictor.eval()
