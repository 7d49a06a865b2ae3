"""The result records `ctxprune eval` and `ctxprune bench` write and `ctxprune report` and the demo read.

Typed, so that readers name fields instead of guessing keys. `to_json` writes and `from_json` reads the
JSON layout of the files under results/ key for key (a test round-trips every committed one). Fields
that older or hand-written files lack are optional and read as None. A group's measurements depend on
its task and on whether FLOPs were counted, so a group writes only what was measured; every other
record writes all its keys, null where unknown, as the producers always have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from ctxprune.errors import CtxpruneError

EVAL_SHAPE = 'eval JSON needs "split" and "models" with "name" and "groups" each'
BENCH_SHAPE = 'bench JSON needs "results" with "name", "batch" and "median_ms" each'
RUNTIMES_SHAPE = 'bench-runtimes JSON needs "natural_batch1" with "results" by variant, each with "median_ms"'


def _known(cls: type, obj: dict[str, Any]) -> dict[str, Any]:
    """The keys of `obj` that are fields of `cls`; others are ignored, as the report always did."""
    return {f.name: obj[f.name] for f in fields(cls) if f.name in obj}


def _all_fields(record: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name not in skip}


@dataclass(kw_only=True)
class GroupResult:
    """One candidate on one (task, language): quality, executed GFLOPs per utterance, sparsity, keep rates.

    Transcribe groups have WER/CER, translate groups BLEU/chrF; GFLOPs only where FLOPs were counted
    (not under int8)."""

    wer: float | None = None
    cer: float | None = None
    bleu: float | None = None
    chrf: float | None = None
    bleu_signature: str | None = None
    n: int | None = None
    capped: float | None = None  # share of rows that hit the decode length cap
    looped: float | None = None  # with the loop guard: share of rows whose answer it stopped
    fallback: float | None = None  # with the loop guard: share of rows the dense teacher decoded again
    gflops_encoder: float | None = None
    gflops_decoder: float | None = None
    sparsity_flops: float | None = None
    sparsity_count: float | None = None
    keep_rate: dict[str, float] | None = None
    achieved_sparsity: float | None = None
    rows_digest: str | None = None  # which rows, in which order (eval/quality.py rows_digest)
    row_stats: dict[str, list[int]] | None = None  # each row's metric statistics (eval/metrics.py)

    def metric(self, name: str) -> float | None:
        """A quality metric by name: wer, cer, bleu or chrf."""
        if name not in ("wer", "cer", "bleu", "chrf"):
            raise ValueError(f"unknown quality metric {name!r}")
        return getattr(self, name)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in _all_fields(self).items() if v is not None}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> GroupResult:
        if not isinstance(obj, dict):
            raise ValueError(EVAL_SHAPE)
        return cls(**_known(cls, obj))


@dataclass(kw_only=True)
class CandidateResult:
    """One candidate of an evaluation (dense, a gate set, a random baseline) and its results per group,
    keyed "task/language"."""

    name: str
    kind: str | None = None  # dense | context | static | random
    gates: str | None = None
    where: str | None = None
    sparsity_by: str | None = None
    target_sparsity: float | None = None
    seed: int | None = None
    variant: str | None = None  # training beyond the config's fields (suite.training_variant); "" plain
    predictor: str | None = None  # the gate set's predictor sha256 (from its card), to match bench files
    groups: dict[str, GroupResult] = field(default_factory=dict)

    def task_groups(self, task: str) -> dict[str, GroupResult]:
        """{language: group} for one task."""
        out = {}
        for key, group in self.groups.items():
            if "/" in key and key.split("/", 1)[0] == task:
                out[key.split("/", 1)[1]] = group
        return out

    def to_json(self) -> dict[str, Any]:
        # a file from before the variant or predictor field is written back as it was read
        skip = ("groups",) + tuple(k for k in ("variant", "predictor") if getattr(self, k) is None)
        out = _all_fields(self, skip=skip)
        out["groups"] = {k: g.to_json() for k, g in self.groups.items()}
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CandidateResult:
        if not isinstance(obj, dict) or "name" not in obj or not isinstance(obj.get("groups"), dict):
            raise ValueError(EVAL_SHAPE)
        groups = {k: GroupResult.from_json(g) for k, g in obj["groups"].items()}
        return cls(**{**_known(cls, obj), "groups": groups})


@dataclass(kw_only=True)
class EvalRecord:
    """`ctxprune eval`: every candidate decoded the same rows of one split."""

    kind: ClassVar[str] = "eval"
    split: str
    data: str | None = None
    rows: int | None = None
    adapter: str | None = None
    device: str | None = None
    threads: int | None = None
    dtype: str | None = None
    torch: str | None = None
    normalizer: str | None = None
    bleu_signature: str | None = None
    models: list[CandidateResult] = field(default_factory=list)

    def dense(self) -> CandidateResult | None:
        """The dense reference (the first candidate of kind dense), if this record has one."""
        return next((m for m in self.models if m.kind == "dense"), None)

    def candidate(self, name: str) -> CandidateResult | None:
        return next((m for m in self.models if m.name == name), None)

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, **_all_fields(self, skip=("models",))}
        out["models"] = [m.to_json() for m in self.models]
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EvalRecord:
        if not isinstance(obj.get("split"), str) or not isinstance(obj.get("models"), list):
            raise ValueError(EVAL_SHAPE)
        models = [CandidateResult.from_json(m) for m in obj["models"]]
        return cls(**{**_known(cls, obj), "models": models})


@dataclass(kw_only=True)
class BenchResult:
    """One variant at one batch size: times in ms per call (per utterance at batch 1), over `repeats`.
    `reduction_vs_dense` is 1 - median / the dense candidate's median; None without a dense one."""

    name: str
    kind: str | None = None
    batch: int
    rows: int | None = None
    median_ms: float
    p25_ms: float | None = None
    p75_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    repeats: int | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    reduction_vs_dense: float | None = None

    def to_json(self) -> dict[str, Any]:
        return _all_fields(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> BenchResult:
        if not isinstance(obj, dict) or not all(k in obj for k in ("name", "batch", "median_ms")):
            raise ValueError(BENCH_SHAPE)
        return cls(**_known(cls, obj))


@dataclass(kw_only=True)
class BenchRecord:
    """`ctxprune bench`: latency of each candidate on the same inputs; `reference` names the dense one."""

    kind: ClassVar[str] = "bench"
    device: str | None = None  # cuda | cpu
    device_name: str | None = None
    threads: int | None = None
    dtype: str | None = None
    split: str | None = None
    reference: str | None = None
    versions: dict[str, str] | None = None
    loop_guard: bool | None = None  # None: written before the bench could run with the guard (it did not)
    # gate set name -> its predictor's sha256 when timed (written since the eighteenth step)
    gate_set_predictors: dict[str, str] | None = None
    results: list[BenchResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        skip = ("results", "gate_set_predictors") if self.gate_set_predictors is None else ("results",)
        if self.loop_guard is None:
            skip += ("loop_guard",)
        out = {"kind": self.kind, **_all_fields(self, skip=skip)}
        out["results"] = [r.to_json() for r in self.results]
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> BenchRecord:
        if not isinstance(obj.get("results"), list):
            raise ValueError(BENCH_SHAPE)
        results = [BenchResult.from_json(r) for r in obj["results"]]
        return cls(**{**_known(cls, obj), "results": results})

    @classmethod
    def from_runtimes(cls, obj: dict[str, Any]) -> BenchRecord:
        """`bench/runtimes.py`'s natural-length batch-1 phase read as a bench record: our dense runtime
        (CUDA graphs where it ran on CUDA) as `dense`, and each gate set as it ran there, without the
        loop guard's variants."""
        phase = obj.get("natural_batch1")
        if not isinstance(phase, dict) or not isinstance(phase.get("results"), dict):
            raise ValueError(RUNTIMES_SHAPE)
        cuda = "ours-dense-graphs" in phase["results"]
        dense = "ours-dense-graphs" if cuda else "ours-dense-eager"
        results = []
        for name, r in phase["results"].items():
            if name != dense and (name.startswith(("ours-dense", "hf-")) or "+" in name):
                continue
            label = "dense" if name == dense else name.removeprefix("ours-")
            results.append(BenchResult.from_json({**r, "name": label, "batch": 1, "rows": phase.get("rows")}))
        return cls(
            device="cuda" if cuda else "cpu",
            device_name=obj.get("device"),
            threads=obj.get("threads"),
            dtype=obj.get("dtype"),
            reference="dense",
            versions=obj.get("versions"),
            gate_set_predictors=obj.get("gate_set_predictors"),
            results=results,
        )


def read_record(path: Path) -> EvalRecord | BenchRecord:
    """Read one eval or bench result file, failing with a message that names the file and the fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CtxpruneError(f"cannot read result file {path}: {e}; check the path") from e
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise CtxpruneError(f"{path} is not valid JSON ({e}); re-run the eval or bench that wrote it") from e
    kind = obj.get("kind") if isinstance(obj, dict) else None
    read = {
        "eval": EvalRecord.from_json,
        "bench": BenchRecord.from_json,
        "bench-runtimes": BenchRecord.from_runtimes,
    }
    if kind not in read:
        raise CtxpruneError(
            f'{path} has kind {kind!r}, expected "eval", "bench" or "bench-runtimes"; pass only eval/bench '
            "result JSON"
        )
    try:
        return read[kind](obj)
    except (ValueError, KeyError, TypeError) as e:
        raise CtxpruneError(f"{path}: {e}") from None
