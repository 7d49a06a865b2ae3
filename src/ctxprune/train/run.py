"""The training loop shared by `train adapt` and `train gates`: seeds, bf16 autocast on GPU, gradient
clipping, warm-up + cosine learning rate, JSONL metrics, atomic checkpoints with exact resume, and
data parallelism under `torchrun` (gradients averaged across processes; only rank 0 writes)."""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ctxprune import assets
from ctxprune.data.dataset import Collate, DurationBucketSampler, SpeechDataset
from ctxprune.data.manifest import read_manifest
from ctxprune.data.perturb import SpeedPerturbation
from ctxprune.data.pseudo_labels import load_pseudo_labels, teacher_name
from ctxprune.data.speaker import SPEAKER, SpeakerVectors
from ctxprune.errors import CtxpruneError
from ctxprune.eval.quality import evaluate, limit_per_group
from ctxprune.paths import sha256_files, write_bytes_atomic, write_json_atomic
from ctxprune.runtime.decoding import DecodeOptions
from ctxprune.train.adapt import AdaptTask
from ctxprune.train.checkpoint import load_checkpoint, save_checkpoint
from ctxprune.train.config import TrainConfig
from ctxprune.train.gates import GateTask


def _distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def learning_rate(config: TrainConfig, step: int, base: float | None = None) -> float:
    """Linear warm-up, then cosine decay to zero, of `base` (default: `config.lr`)."""
    base = config.lr if base is None else base
    if step < config.warmup:
        return base * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def total_steps(card: dict) -> int:
    """Steps of training behind a card, a continued run's first runs included."""
    return card.get("steps_total", card["steps"])


def start_record(start_from: str | None, name: str) -> Path | None:
    """A file of the gate set a re-tune started from (its card or log: its training history), if any."""
    if not start_from:
        return None
    return next((p for p in (Path(start_from) / name, Path(start_from).parent / name) if p.is_file()), None)


def training_history(start_from: str | None) -> list[dict]:
    """The logged rows of every run behind a gate set, steps counted from the start of training: the
    set's own history (its start_from_metrics.jsonl, when it too was continued), then its own log."""
    log = start_record(start_from, "metrics.jsonl")
    if log is None:
        return []
    earlier = start_record(start_from, "start_from_metrics.jsonl")
    rows = [json.loads(line) for line in earlier.read_text().splitlines()] if earlier else []
    offset = max((r["step"] for r in rows), default=0)
    return rows + [{**r, "step": r["step"] + offset} for r in map(json.loads, log.read_text().splitlines())]


class Run:
    """One training run: the task (adaptation or gates) owns the model parts that train, their groups,
    the artifact and the card fields; the run owns the loop, the schedule, checkpoints and logs."""

    def __init__(self, config: TrainConfig, times_elsewhere: bool = False):
        """`times_elsewhere`: a latency run's `branch_times` may come from another device (to finish a
        run on another machine than the one it trained on)."""
        self.config = config
        self.out = Path(config.out)
        self.rank, self.world, self.device = _distributed()
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.loaded = assets.load(config.model, device=str(self.device))
        self.loaded.model.requires_grad_(False)
        if config.kind == "adapt":
            self.task = AdaptTask(self.loaded.model, config)
        else:
            self.task = GateTask(self.loaded.model, config, self.loaded.tokens, times_elsewhere)
        self.params = self.task.named_parameters()
        self.calibration: dict | None = None  # set once the gates are calibrated; they are frozen from then
        self.optimizer = torch.optim.AdamW(
            self.task.parameter_groups(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + self.rank)

    # the train split is read when training starts: a run can be finished from its checkpoint without it
    @cached_property
    def train_set(self) -> SpeechDataset:
        # distillation also trains on rows without a reference, on the teacher's pseudo-labels
        return SpeechDataset(
            self.config.data,
            "train",
            with_reference=not self.task.distills,
            every_audio=self.config.train_every_audio,
        )

    @cached_property
    def sampler(self) -> DurationBucketSampler:
        config = self.config
        return DurationBucketSampler(self.train_set.durations, config.batch_size, seed=config.seed)

    @cached_property
    def collate(self) -> Collate:
        config, distills = self.config, self.task.distills
        return Collate(
            self.gw.config.num_mel_bins,
            self.loaded.tokenizer,
            self.loaded.tokens,
            pseudo_labels=load_pseudo_labels(
                Path(config.data),
                teacher_name(config.model, config.adapter),
                unfinished_tokens=config.loop_label_tokens,
            )
            if distills
            else None,
            waveforms=self.device.type == "cuda",  # the log-mel is then computed on the GPU
            vectors={SPEAKER: SpeakerVectors(config.data, "train")} if SPEAKER in config.context else None,
            perturb=SpeedPerturbation(config.speed_perturb, config.seed),  # [1.0]: the audio as it is
        )

    @property
    def gw(self):
        return self.task.gw

    @property
    def peft(self):
        return self.task.peft

    @property
    def predictor(self):
        return self.task.predictor

    # ------------------------------------------------------------------ bookkeeping
    def _log(self, row: dict) -> None:
        if self.rank == 0:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        path = self.out / "metrics.jsonl"
        if self.rank == 0 and path.exists():
            rows = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
            write_bytes_atomic(path, "".join(r + "\n" for r in rows).encode())

    def _batches(self, epoch: int) -> list[list[int]]:
        self.sampler.set_epoch(epoch)
        batches = self.sampler.batches()
        usable = len(batches) // self.world * self.world  # every process gets the same number of steps
        return batches[:usable][self.rank :: self.world]

    def evaluate(self, limit: int | None) -> dict:
        examples = limit_per_group(read_manifest(Path(self.config.data), "dev"), limit)
        pipeline = self.task.pipeline(self.loaded.tokens)
        # eager: on the H200 the multi-lane graphed decode hit an illegal memory access inside a training
        # process (peft-wrapped model, several signature lanes); `ctxprune eval` keeps the graphs
        options = DecodeOptions(max_new_tokens=self.config.eval_max_tokens, path="eager")
        return evaluate(pipeline, self.loaded.tokenizer, Path(self.config.data), examples, options=options)

    def _calibrate_if_due(self, step: int) -> None:
        """Calibrate once, at the start of the deterministic tail (or at the end, with no tail)."""
        config = self.config
        due = step >= config.tail_start
        if self.task.calibrates and config.calibrate and self.calibration is None and due:
            self.calibration = self.task.calibrate(self.device)
            self._log({"step": step, "calibration": self.calibration})

    def _set_calibration(self, calibration: dict | None) -> None:
        self.calibration = calibration
        if calibration:
            self.predictor.config.logit_shift = list(calibration["logit_shift"].values())

    def _set_learning_rates(self, step: int) -> dict[str, float]:
        """Each group's rate at `step` (0 for predictor groups once calibrated): applied, and logged."""
        for group in self.optimizer.param_groups:
            frozen = self.calibration is not None and group.get("freezes_after_calibration", False)
            group["lr"] = 0.0 if frozen else learning_rate(self.config, step, group["base_lr"])
        return {group["name"]: group["lr"] for group in self.optimizer.param_groups}

    # ------------------------------------------------------------------ the loop
    def train(
        self, resume: bool = False, on_progress: Callable[[int, int, dict], None] | None = None
    ) -> dict:
        config = self.config
        checkpoint = self.out / "checkpoint"
        if checkpoint.exists() and not resume:
            raise CtxpruneError(
                f"{self.out} already holds a run; pass --resume to continue it or choose another --out"
            )
        _ = self.collate, self.sampler  # the train split, its labels and vectors: read before writing
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.out / "config.yaml", config.to_yaml().encode())
        step, elapsed = 0, 0.0
        if resume and checkpoint.exists():
            meta = load_checkpoint(checkpoint, self.params, self.optimizer, self.generator)
            step, elapsed = meta["step"], meta["elapsed"]
            self._set_calibration(meta.get("calibration"))
            self._truncate_metrics(step)
        per_epoch = len(self._batches(0))
        if per_epoch == 0:
            raise CtxpruneError(
                f"the train split has fewer than {config.batch_size * self.world} rows; lower --batch-size"
            )
        use_amp = config.amp and self.device.type == "cuda"
        start = time.perf_counter() - elapsed
        while step < config.steps:
            epoch, offset = divmod(step, per_epoch)
            self.collate.perturb.epoch = epoch  # each epoch draws new speeds
            loader = DataLoader(
                self.train_set,
                batch_sampler=self._batches(epoch)[offset:],
                collate_fn=self.collate,
                num_workers=config.workers,
            )
            for batch in loader:
                self._calibrate_if_due(step)
                self.task.train()
                rates = self._set_learning_rates(step)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss, logs = self.task.loss(batch, step, self.generator)
                self.optimizer.zero_grad(set_to_none=False)
                loss.backward()
                if self.world > 1:
                    for p in self.params.values():
                        dist.all_reduce(p.grad)
                        p.grad /= self.world
                grad_norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), config.grad_clip)
                self.optimizer.step()
                step += 1
                row = {"step": step, "loss": loss.item(), "lr": rates, **logs}
                row["grad_norm"] = float(grad_norm)
                row["elapsed"] = round(time.perf_counter() - start, 3)  # seconds, across resumes
                if step % config.log_every == 0 or step == config.steps:
                    self._log({**row, **self._memory()})
                if self.rank == 0 and (step % config.save_every == 0 or step == config.steps):
                    extra = {"elapsed": time.perf_counter() - start, "calibration": self.calibration}
                    save_checkpoint(checkpoint, step, self.params, self.optimizer, self.generator, extra)
                if (
                    self.rank == 0
                    and config.eval_every
                    and step % config.eval_every == 0
                    and step < config.steps
                ):
                    self._log({"step": step, "dev": self.evaluate(config.eval_limit)})
                if on_progress:
                    on_progress(step, config.steps, row)
                if step >= config.steps:
                    break
        wall = time.perf_counter() - start
        if self.world > 1:
            dist.barrier()
        return self.finish(wall) if self.rank == 0 else {}

    def _memory(self) -> dict:
        """The most GPU memory this process has held: how many runs can share a GPU."""
        if self.device.type != "cuda":
            return {}
        return {"gpu_peak_gib": round(torch.cuda.max_memory_reserved(self.device) / 2**30, 2)}

    def finish_from_checkpoint(self, calibration: dict | None = None) -> dict:
        """The artifact and card of the run's last checkpoint, with no more training: for a run whose
        machine went away in its deterministic tail, on a machine without its train split. `calibration`
        is the one the run logged after that checkpoint (else the checkpoint's, else one made here on dev).
        The card's `steps` are the checkpoint's, and `stopped_at` says so."""
        checkpoint = self.out / "checkpoint"
        meta = load_checkpoint(checkpoint, self.params, self.optimizer, self.generator, random_states=False)
        planned, self.config = self.config.steps, replace(self.config, steps=meta["step"])
        self._set_calibration(calibration or meta.get("calibration"))
        return self.finish(meta["elapsed"], {"stopped_at": {"step": meta["step"], "planned_steps": planned}})

    def finish(self, wall: float, extra: dict | None = None) -> dict:
        """Evaluate on dev, save the artifact (adapter or predictor) and its JSON card."""
        config = self.config
        self._calibrate_if_due(config.steps)
        dev = self.evaluate(config.eval_limit)
        self._log({"step": config.steps, "dev": dev})
        artifact = self.out / self.task.artifact
        self.task.save(artifact)
        build = json.loads((Path(config.data) / "build.json").read_text())
        fields = self.task.card_fields(dev)
        card = {
            "kind": fields["kind"],
            "where": config.where,
            "sparsity_by": config.sparsity_by,
            "context": list(config.context),
            "target_sparsity": fields["target_sparsity"],
            "achieved_sparsity": fields["achieved_sparsity"],
            "config": json.loads(json.dumps(config.__dict__)),
            "data": {"dir": str(config.data), "build": build["config"], "catalogs": build.get("catalogs")},
            "steps": config.steps,
            "wall_seconds": round(wall, 1),
            "hardware": {
                "device": torch.cuda.get_device_name()
                if self.device.type == "cuda"
                else platform.processor() or "cpu",
                "processes": self.world,
                "torch": torch.__version__,
                **self._memory(),
            },
            **({"branch_ms": fields["branch_ms"]} if "branch_ms" in fields else {}),
            **({"calibration": self.calibration} if self.calibration else {}),
            **(
                {
                    "start_from_card": (first := json.loads(start.read_text())),
                    "steps_total": config.steps + total_steps(first),
                }
                if (start := start_record(config.start_from, "card.json"))
                else {}
            ),
            "dev": {k: {m: v for m, v in r.items() if m != "keep_rate"} for k, r in dev.items()},
            "files": sha256_files(artifact),
            **(extra or {}),
        }
        if history := training_history(config.start_from):
            lines = "".join(json.dumps(row) + "\n" for row in history)
            write_bytes_atomic(self.out / "start_from_metrics.jsonl", lines.encode())
        write_json_atomic(self.out / "card.json", card)
        return card
