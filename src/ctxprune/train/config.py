"""One typed config describes a training run fully; it is saved next to the run's checkpoints as YAML,
and any field can be overridden from the command line (`--set lr=3e-4`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ctxprune.data.perturb import SpeedPerturbation
from ctxprune.errors import CtxpruneError

KINDS = ("adapt", "gates")
WHERE = ("encoder", "decoder", "both")
SPARSITY_BY = ("flops", "count", "latency")
BUDGET_PER = ("batch", "task")


@dataclass
class TrainConfig:
    kind: str = "gates"  # adapt: LoRA on the base model; gates: a gate predictor on the (adapted) model
    data: str = ""  # corpus directory (`ctxprune data build`)
    out: str = ""  # run directory: config.yaml, checkpoint/, metrics.jsonl, final artifact
    model: str | None = None  # base model: None = the prepared Whisper base
    adapter: str | None = None  # LoRA adapter to start from (gate runs use the adapted model)
    # LoRA
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    )
    train_lora: bool = False  # gate runs: train a second LoRA (on the merged adapter) jointly with the gates
    lora_lr: float = 1e-4  # that LoRA's learning rate (the predictor uses `lr`)
    # gates
    target: float = 0.5
    where: str = "decoder"
    sparsity_by: str = "flops"  # flops | count | latency (measured branch times on this device)
    branch_times: str | None = None  # latency: a JSON of branch times shared by runs (written if absent)
    encoder_target: float | None = None  # where=both: the encoder's own target (`target` is the decoder's)
    context: list[str] = field(default_factory=lambda: ["task", "language", "audio", "encoder"])
    alpha: float = 4.0
    # whose mean sparsity the target holds: the batch's (a context predictor may skip more for one task
    # and less for another) or each task's in the batch (docs/training.md, "Eleventh step")
    budget_per: str = "batch"
    target_warmup: int = 0  # steps over which the target rises linearly from 0 (lets the LoRA follow)
    deterministic_tail: float = 0.1  # the last fraction of steps runs the inference masks (no gate noise)
    context_lr_scale: float = 0.1  # the predictor's context pathway learns at lr * this; gate biases at lr
    calibrate: bool = True  # at the start of the deterministic tail, logit shifts land dev sparsity on target
    start_from: str | None = None  # a trained gate set to continue from (its predictor and LoRA)
    tau_start: float = 1.0
    tau_end: float = 0.1
    hidden: int = 64
    # distillation from the dense teacher (the same weights, all gates open, no LoRA, no gradient)
    kl_weight: float = 1.0  # KL(teacher || student) on the teacher's pseudo-labels (and references)
    label_weight: float = 0.0  # cross-entropy on the references, where a row has one
    hidden_weight: float = 0.0  # normalized MSE of the decoder layers' outputs (and the encoder output)
    temperature: float = 2.0  # of the KL term (scaled by T^2)
    # on-policy distillation: every n-th step once the target ramp is over, the student's own greedy
    # outputs (under the masks it trains with) join the sequences the KL is taken on; 0 = never
    onpolicy_every: int = 0
    # a pseudo-label whose decode hit the length cap (a loop, as a rule) trains on its first N tokens:
    # one such row in a batch widened every row's decoder pass to 128 tokens (see docs/architecture.md)
    loop_label_tokens: int = 48
    # each training row's audio played at one of these speeds, drawn per (seed, epoch, row): more voices
    # from the same corpus (data/perturb.py); [1.0] leaves the audio as it is
    speed_perturb: list[float] = field(default_factory=lambda: [1.0])
    # train on the rows of every n-th audio file only (data/manifest.py `audio_files`): with a speaker
    # cache of that subset (`speaker-embed --every n`), both arms of a speaker A/B see the same rows
    train_every_audio: int = 1
    # optimisation
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    seed: int = 0
    # bookkeeping
    log_every: int = 10
    eval_every: int = 500
    eval_limit: int = 100  # dev rows per (language, task) at each evaluation
    eval_max_tokens: int = 224  # decode length cap during evaluation
    save_every: int = 200
    workers: int = 2  # data-loading processes

    def __post_init__(self):
        if self.kind not in KINDS:
            raise CtxpruneError(f"unknown run kind {self.kind!r}; use one of: {', '.join(KINDS)}")
        if self.where not in WHERE:
            raise CtxpruneError(f"--where must be one of {', '.join(WHERE)}, got {self.where!r}")
        if self.sparsity_by not in SPARSITY_BY:
            raise CtxpruneError(
                f"--sparsity-by must be one of {', '.join(SPARSITY_BY)}, got {self.sparsity_by!r}"
            )
        if self.budget_per not in BUDGET_PER:
            raise CtxpruneError(f"budget_per must be one of {', '.join(BUDGET_PER)}, got {self.budget_per!r}")
        for name in ("target", "encoder_target"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise CtxpruneError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
        if self.encoder_target is not None and self.where != "both":
            raise CtxpruneError("--encoder-target needs --where both (the decoder keeps --target)")
        if min(self.kl_weight, self.label_weight, self.hidden_weight) < 0 or self.temperature <= 0:
            raise CtxpruneError("loss weights must be >= 0 and the temperature > 0")
        if self.kind == "gates" and self.kl_weight + self.label_weight + self.hidden_weight == 0:
            raise CtxpruneError("all loss weights are 0: set kl_weight, label_weight or hidden_weight")
        SpeedPerturbation(self.speed_perturb)  # refuses factors out of its range, before any work
        if self.onpolicy_every < 0:
            raise CtxpruneError(
                f"onpolicy_every must be 0 (off) or a step interval, got {self.onpolicy_every}"
            )
        if min(self.steps, self.batch_size, self.loop_label_tokens, self.train_every_audio) < 1:
            raise CtxpruneError(
                "--steps, --batch-size, loop_label_tokens and train_every_audio must be at least 1"
            )

    @property
    def tail_start(self) -> int:
        """The first step of the deterministic tail (the inference masks, after calibration)."""
        return round(self.steps * (1 - self.deterministic_tail))

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise CtxpruneError(f"cannot read config {path}: {e}") from None
        return cls.with_overrides(cls(), data)

    @classmethod
    def with_overrides(cls, base: TrainConfig, values: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise CtxpruneError(f"unknown config field(s) {unknown}; known: {', '.join(sorted(names))}")
        defaults = dataclasses.asdict(cls())
        coerced = {}
        for key, value in values.items():
            kind = type(defaults[key])
            if isinstance(value, str) and kind in (int, float):  # YAML reads "3e-4" as a string
                try:
                    value = kind(value)
                except ValueError:
                    raise CtxpruneError(f"{key} must be a number, got {value!r}") from None
            coerced[key] = value
        return cls(**{**dataclasses.asdict(base), **coerced})

    def override(self, assignments: list[str]) -> TrainConfig:
        """Apply `key=value` strings; values are parsed as YAML (numbers, booleans, lists)."""
        values = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep:
                raise CtxpruneError(f"--set expects key=value, got {item!r}")
            values[key.strip().replace("-", "_")] = yaml.safe_load(raw)
        return self.with_overrides(self, values)
