"""The gate space: a model's ordered, named, gateable residual branches and what each one costs.

Costs are FLOPs measured with `torch.utils.flop_counter.FlopCounterMode` by the model integration,
split into the parts that scale differently: once per utterance (e.g. an encoder branch over its
frames, or cross-attention K/V), per decoded token, and per token per cached position (self-attention
scores). `cost()` turns them into one figure for a given decode length, used to weight sparsity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class GateCost:
    per_utterance: float = 0.0
    per_token: float = 0.0
    per_token_position: float = 0.0

    def decode(self, prompt_len: int, new_tokens: int) -> float:
        """FLOPs of this branch for a decode that feeds the prompt at once, then `new_tokens - 1`
        single tokens (the last generated token is never fed back)."""
        fed = prompt_len + max(new_tokens - 1, 0)
        positions = prompt_len * prompt_len + sum(range(prompt_len + 1, fed + 1))
        return self.per_utterance + self.per_token * fed + self.per_token_position * positions

    def total(self, tokens: int) -> float:
        """Cost at a reference length of `tokens` decoded one at a time."""
        return (
            self.per_utterance + self.per_token * tokens + self.per_token_position * tokens * (tokens + 1) / 2
        )


@dataclass(frozen=True)
class GateSpace:
    names: tuple[str, ...]
    costs: tuple[GateCost, ...]
    model: str  # a description of the model family and shape the space belongs to
    ungated: GateCost = GateCost()  # what always runs (front-end, embeddings, output projection)
    reference_tokens: int = 32  # the decode length used to weigh per-token against per-utterance costs
    times: tuple[GateCost, ...] | None = None  # measured branch times in ms, for sparsity by latency
    times_device: str | None = None  # where the times were measured

    def __post_init__(self):
        if len(self.names) != len(self.costs) or len(set(self.names)) != len(self.names):
            raise ValueError("gate names must be unique and match the costs one to one")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def indices(self, prefix: str) -> list[int]:
        return [i for i, n in enumerate(self.names) if n.startswith(prefix)]

    def weights(self, by: str = "flops") -> list[float]:
        """Per-gate FLOPs (or, by latency, measured milliseconds) at the reference length: sparsity
        weighted by these means 'share of compute' (or 'share of time')."""
        if by == "latency" and self.times is None:
            raise ValueError(
                "this gate space has no measured branch times (train with --sparsity-by latency)"
            )
        return [c.total(self.reference_tokens) for c in (self.times if by == "latency" else self.costs)]

    def with_times(self, times: tuple[GateCost, ...], device: str) -> GateSpace:
        if len(times) != len(self.names):
            raise ValueError("one measured time per gate is needed")
        return replace(self, times=tuple(times), times_device=device)

    def executed_flops(self, keep: list[bool], prompt_len: int, new_tokens: int) -> float:
        """FLOPs of one utterance with this mask, from the measured component costs."""
        kept = sum(c.decode(prompt_len, new_tokens) for c, k in zip(self.costs, keep, strict=True) if k)
        return self.ungated.decode(prompt_len, new_tokens) + kept

    @property
    def fingerprint(self) -> str:
        """Identifies the space by model and names (not costs, which depend on the counter's version)."""
        return hashlib.sha256(json.dumps([self.model, list(self.names)]).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        d = {
            "model": self.model,
            "reference_tokens": self.reference_tokens,
            "ungated": asdict(self.ungated),
            "gates": [{"name": n, **asdict(c)} for n, c in zip(self.names, self.costs, strict=True)],
        }
        if self.times is not None:
            d["times_ms"] = {"device": self.times_device, "gates": [asdict(t) for t in self.times]}
        return d

    @classmethod
    def from_json(cls, d: dict) -> GateSpace:
        gates = d["gates"]
        return cls(
            names=tuple(g["name"] for g in gates),
            costs=tuple(GateCost(g["per_utterance"], g["per_token"], g["per_token_position"]) for g in gates),
            model=d["model"],
            ungated=GateCost(**d["ungated"]),
            reference_tokens=d["reference_tokens"],
            times=tuple(GateCost(**t) for t in d["times_ms"]["gates"]) if "times_ms" in d else None,
            times_device=d["times_ms"]["device"] if "times_ms" in d else None,
        )
