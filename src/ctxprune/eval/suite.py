"""`ctxprune eval`: the dense model, gate sets and random baselines on one split, side by side.

Every candidate decodes the same rows. The dense reference is Whisper base (with an adapter if given);
a gate set adds its predictor (and its own LoRA); a random baseline drops each gate of a stack with
probability S on the dense model, over several seeds. Per (task, language) each candidate gets its
quality, the GFLOPs that actually ran (FlopCounterMode), its sparsity and each gate's keep rate.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ctxprune.data.manifest import Example, read_manifest
from ctxprune.errors import CtxpruneError
from ctxprune.eval.quality import evaluate, limit_per_group, only_groups
from ctxprune.eval.records import CandidateResult, EvalRecord, GroupResult
from ctxprune.gating.policy import RandomMasks
from ctxprune.gating.random_gates import RandomGates
from ctxprune.gating.sparsity import gate_weights
from ctxprune.models.whisper import STACK_PREFIX
from ctxprune.paths import card_predictor
from ctxprune.runtime.decoding import GREEDY, DecodeOptions
from ctxprune.stack import StackSpec, load_stack
from ctxprune.train.config import TrainConfig


@dataclass
class Candidate:
    name: str
    kind: str  # dense | context | static | random
    gates: Path | None = None
    where: str | None = None
    sparsity_by: str | None = None
    target_sparsity: float | None = None
    seed: int | None = None
    variant: str | None = None
    predictor: str | None = None

    @classmethod
    def gate_set(cls, path: Path) -> Candidate:
        card_path = path / "card.json"
        if not card_path.is_file():
            raise CtxpruneError(
                f"{path}: not a gate set (no card.json); use a directory under artifacts/gates"
            )
        card = json.loads(card_path.read_text())
        return cls(
            name=path.name,
            kind=card["kind"],
            gates=path,
            where=card["where"],
            sparsity_by=card["sparsity_by"],
            target_sparsity=card["target_sparsity"],
            seed=card.get("config", {}).get("seed"),
            variant=training_variant(card),
            predictor=card_predictor(card),
        )

    @classmethod
    def random(cls, rate: float, where: str, seed: int) -> Candidate:
        return cls(f"random-{where}-{rate:g}-seed{seed}", "random", None, where, "flops", rate, seed)

    def result(self, groups: dict[str, GroupResult]) -> CandidateResult:
        """This candidate's entry in an eval record, with its results per (task, language)."""
        return CandidateResult(
            name=self.name,
            kind=self.kind,
            gates=str(self.gates) if self.gates else None,
            where=self.where,
            sparsity_by=self.sparsity_by,
            target_sparsity=self.target_sparsity,
            seed=self.seed,
            variant=self.variant,
            predictor=self.predictor,
            groups=groups,
        )


def training_variant(card: dict) -> str:
    """How a gate set's training departs from the plain recipe, in what the GPU recipe's run flags change
    (scripts/distill_on_gpu.sh: speed perturbation, continued, speaker, a wider LoRA with hidden states,
    a budget per task, a subset of the audio), against the training config's defaults: sets that differ
    here are different configurations, so the report does not count them as seeds of one. "" for the
    plain recipe."""
    config, plain = card.get("config", {}), TrainConfig()
    parts = []
    if (speed := config.get("speed_perturb")) and list(speed) != [1.0]:
        parts.append("speed " + ",".join(f"{f:g}" for f in speed))
    if config.get("start_from"):
        parts.append("continued")
    if "speaker" in card.get("context", []):
        parts.append("speaker")
    if config.get("train_lora") and config.get("lora_rank", plain.lora_rank) != plain.lora_rank:
        parts.append(f"LoRA rank {config['lora_rank']}")
    if config.get("hidden_weight", plain.hidden_weight) != plain.hidden_weight:
        parts.append(f"hidden states {config['hidden_weight']:g}")
    if config.get("budget_per", plain.budget_per) != plain.budget_per:
        parts.append(f"budget per {config['budget_per']}")
    if (every := config.get("train_every_audio", plain.train_every_audio)) != plain.train_every_audio:
        parts.append(f"every {every}th file")
    return "; ".join(parts)


def device_name(device: str) -> str:
    """What the numbers were measured on: the GPU's name, else the CPU's."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def stack_sparsity(keep_rate: dict[str, float], space, where: str, by: str) -> float:
    """Skipped share of a stack's gates, weighted by FLOPs or counted, from per-gate keep rates."""
    index = space.indices(STACK_PREFIX[where])
    weights = gate_weights(space, by)[index]
    keep = torch.tensor([keep_rate[space.names[i]] for i in index])
    return float(((1 - keep) * weights).sum() / weights.sum())


def rows_sparsity(results: dict, space, where: str, by: str) -> float:
    """A stack's sparsity over all evaluated rows (per-group results weighted by their row counts)."""
    total = sum(r["n"] for r in results.values())
    return sum(r["n"] * stack_sparsity(r["keep_rate"], space, where, by) for r in results.values()) / total


def eval_rows(
    data: Path, split: str, limit: int | None = None, groups: list[str] | None = None
) -> list[Example]:
    """The rows an evaluation decodes: the first `limit` of each (task, language) of the `groups` named
    ("task/language", default all), in manifest order."""
    return limit_per_group(only_groups(read_manifest(data, split), groups), limit)


def evaluate_candidates(
    candidates: list[Candidate],
    data: Path,
    spec: StackSpec,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 16,
    options: DecodeOptions = GREEDY,
    on_progress: Callable[[int], None] | None = None,
    on_candidate: Callable[[str], None] | None = None,
    groups: list[str] | None = None,
) -> EvalRecord:
    """Evaluate each candidate on the same rows (`spec` without its gates: each candidate brings its
    own), the first `limit` of each (task, language), of the `groups` named ("task/language", default
    all); returns the record (`kind: eval`) the report reads. FLOPs are counted on what ran, except
    with int8 (FlopCounterMode does not count quantized Linear layers)."""
    examples = eval_rows(data, split, limit, groups)
    if not examples:
        raise CtxpruneError(f"{data}: the {split} split has no rows")
    options = replace(options, count_flops=not spec.int8)
    models = []
    dense_stack = None
    for c in candidates:
        if on_candidate:
            on_candidate(c.name)
        if c.gates is not None:
            stack = load_stack(spec.with_gates(c.gates))
        else:
            dense_stack = dense_stack or load_stack(spec.with_gates(None))
            stack = dense_stack
            if c.kind == "random":
                gates = RandomGates(stack.space, c.target_sparsity, STACK_PREFIX[c.where], c.seed)
                stack = stack.with_policy(RandomMasks(gates))
        groups = evaluate(
            stack.pipeline, stack.loaded.tokenizer, data, examples, batch_size, on_progress, options
        )
        for r in groups.values():
            r["achieved_sparsity"] = (
                stack_sparsity(r["keep_rate"], stack.space, c.where, c.sparsity_by) if c.where else 0.0
            )
        models.append(c.result({key: GroupResult.from_json(r) for key, r in groups.items()}))
    return EvalRecord(
        split=split,
        data=str(data),
        rows=len(examples),
        adapter=str(spec.adapter) if spec.adapter else None,
        device=device_name(spec.device),
        threads=torch.get_num_threads(),
        dtype="int8 (dynamic)" if spec.int8 else str(spec.dtype).removeprefix("torch."),
        torch=torch.__version__,
        normalizer="Whisper's English / basic text normalizer (eval/normalize.py), then jiwer",
        bleu_signature=next(
            (r.bleu_signature for m in models for r in m.groups.values() if r.bleu_signature is not None),
            None,
        ),
        models=models,
    )


def summarize(record: EvalRecord) -> list[dict]:
    """One row per candidate: mean WER (transcribe), BLEU (translate), GFLOPs and sparsity over groups."""

    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    rows = []
    for m in record.models:
        groups = m.groups.values()
        counted = [g for g in groups if g.gflops_encoder is not None and g.gflops_decoder is not None]
        rows.append(
            {
                "name": m.name,
                "wer": mean([g.wer for g in groups]),
                "bleu": mean([g.bleu for g in groups]),
                "gflops": mean([g.gflops_encoder + g.gflops_decoder for g in counted]),
                "gflops_decoder": mean([g.gflops_decoder for g in groups]),
                "sparsity": mean([g.achieved_sparsity for g in groups]),
            }
        )
    return rows
