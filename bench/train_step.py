"""Bench: where a gate-training step's time goes, so that long runs fit the GPU budget. Writes JSON.

Times, side by side in one run, on a real corpus with its pseudo-labels and Whisper base:
- `loader/<collate>/w<N>`: a DataLoader with N worker processes alone (no model), seconds per batch.
  `padded` sends 30 s zero-padded waveforms (what training sent before: 123 MB per 64 utterances),
  `packed` the waveforms end to end (`data/features.py`; padded on the device).
- `model`: one distillation step (student and teacher forward, backward, optimizer) on one batch that
  is already on the device, repeated: the step's cost without loading.
- `loop/<collate>/w<N>`: loader and model together, as `ctxprune train gates` runs them.
Every variant runs `--warmup` steps first, then `--repeats` timed steps (the device synchronized at
each); means (the throughput: loader workers deliver in bursts), medians, quartiles and extremes are
reported.

Before those, `--widths N` (default 300) measures how wide the decoder pass is over the first N
batches, with the pseudo-labels as cached and with the teacher's loops cut (`loop_label_tokens`):
every row of a batch is padded to its widest sequence.

With `--encoder-target E` the model step of a run with encoder gates (the recipe's: `where=both`, LoRA
rank 64 on both stacks, hidden states distilled) is timed too, as `model/both`.

With `--profile N`, N more model steps run under `torch.profiler`: the operators that take the most
device time and the most host time, the kernel launches per step, and the phases of a step (encoder,
student and teacher decoders, losses, backward, optimizer) as `record_function` regions. A step that
the device waits on the host for shows as host time well above device time.

With `--loader-only` only the loader variants run (with `--workers 0`: the collate's own cost, in the
calling process; a CPU machine cannot take a batch of 64 through the model in useful time).

Usage: python bench/train_step.py CORPUS [--batch-size 64] [--workers 2 6] [--repeats 20] [--loader-only]
                                  [--profile N] [--encoder-target E] [--widths N] [--widths-only]
                                  [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader

from ctxprune.data.features import CHUNK_SAMPLES, pad_or_trim
from ctxprune.data.pseudo_labels import load_pseudo_labels, teacher_name
from ctxprune.paths import write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.train.config import TrainConfig
from ctxprune.train.distill import join_sequences
from ctxprune.train.run import Run


def _summary(seconds: list[float]) -> dict:
    q = statistics.quantiles(seconds, n=4)
    return {
        "mean_s": statistics.mean(seconds),  # the throughput: workers deliver batches in bursts
        "median_s": statistics.median(seconds),
        "p25_s": q[0],
        "p75_s": q[2],
        "min_s": min(seconds),
        "max_s": max(seconds),
        "repeats": len(seconds),
    }


class PaddedCollate:
    """The collate as it was: each waveform zero-padded to 30 s on the loader's side."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, batch):
        out = self.collate(batch)
        chunks = [audio for _, audio in batch]
        out["audio"] = torch.from_numpy(np.stack([pad_or_trim(c) for c in chunks])).flatten()
        out["audio_lengths"] = torch.full((len(chunks),), CHUNK_SAMPLES)
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# scripts/distill_on_gpu.sh's encoder-gate runs: a larger LoRA on both stacks, hidden states distilled
ENCODER_RUN = {"where": "both", "lora_rank": 64, "lora_alpha": 64, "hidden_weight": 1.0}


class Bench:
    def __init__(self, args, **overrides):
        self.args = args
        config = TrainConfig(
            data=str(args.corpus),
            out=tempfile.mkdtemp(prefix="train_step_"),
            steps=10_000,
            batch_size=args.batch_size,
            train_lora=True,
            lora_lr=5e-4,
            lr=1e-2,
            alpha=100.0,
            target_warmup=1,
            eval_every=0,
            calibrate=False,
            **overrides,
        )
        self.run = Run(config)
        self.device = self.run.device
        self.batches = self.run._batches(0)
        self.run.collate.waveforms = True  # as on the GPU (on a CPU the step then computes the log-mel)
        self.collates = {"packed": self.run.collate, "padded": PaddedCollate(self.run.collate)}
        self.amp = self.device.type == "cuda"

    def loader(self, collate: str, workers: int, steps: int):
        return iter(
            DataLoader(
                self.run.train_set,
                batch_sampler=self.batches[:steps],
                collate_fn=self.collates[collate],
                num_workers=workers,
            )
        )

    def step(self, batch: dict) -> None:
        run = self.run
        run.task.train()
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        with amp, record_function("phase: forward and losses"):
            loss, _ = run.task.loss(batch, 5_000, run.generator)
        run.optimizer.zero_grad(set_to_none=False)
        with record_function("phase: backward"):
            loss.backward()
        with record_function("phase: optimizer"):
            run.optimizer.step()

    def profiled(self, steps: int, top: int = 25) -> dict:
        """`steps` model steps on one batch under the profiler: per step, the operators' device and host
        times (self, in ms), kernel launches and their summed time, and the phases' times."""
        batch = next(self.loader("packed", 0, 1))
        self.step(batch)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        _sync(self.device)
        with profile(activities=activities) as prof:
            for _ in range(steps):
                self.step(batch)
            _sync(self.device)
        events = prof.key_averages()
        # operators (their own kernels' time as device time); regions would count those twice
        operators = [
            e for e in events if not (e.is_user_annotation or e.key.startswith(("phase: ", "Optimizer.")))
        ]
        kernels = [e for e in operators if e.device_type == DeviceType.CUDA]

        def row(e) -> dict:
            return {
                "op": e.key,
                "calls": e.count / steps,
                "self_device_ms": e.self_device_time_total / 1e3 / steps,
                "self_host_ms": e.self_cpu_time_total / 1e3 / steps,
            }

        launches = sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel", "cuLaunchKernel")))
        phases = [e for e in events if e.key.startswith("phase: ")]
        return {
            "steps": steps,
            "kernel_launches_per_step": launches / steps,
            "kernel_ms_per_step": sum(e.self_device_time_total for e in kernels) / 1e3 / steps,
            "phases": [
                {
                    "phase": e.key,
                    "host_ms": e.cpu_time_total / 1e3 / steps,
                    "device_ms": e.device_time_total / 1e3 / steps,
                }
                for e in phases
            ],
            "by_device_time": [
                row(e) for e in sorted(operators, key=lambda e: -e.self_device_time_total)[:top]
            ],
            "by_host_time": [row(e) for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]],
        }

    def timed(self, bar, name: str, batches, work) -> dict:
        a, seconds = self.args, []
        task = bar.add_task(name, total=a.warmup + a.repeats)
        for i in range(a.warmup + a.repeats):
            _sync(self.device)
            start = time.perf_counter()
            work(next(batches))
            _sync(self.device)
            if i >= a.warmup:
                seconds.append(time.perf_counter() - start)
            bar.advance(task)
        return _summary(seconds)

    def decoder_widths(self, n: int) -> dict:
        """The decoder pass's width (pseudo-label and reference rows joined and padded, as distillation
        feeds them) over the first `n` batches, with the pseudo-labels as cached and with the loops cut
        (`loop_label_tokens`), and the share of its positions that carry a target."""
        run, c = self.run, self.run.config
        cached = load_pseudo_labels(Path(c.data), teacher_name(c.model, c.adapter))
        silence = np.zeros(160, dtype=np.float32)  # the widths do not depend on the audio
        result = {}
        for name, labels in (("as_cached", cached), ("loops_cut", run.collate.pseudo_labels)):
            collate = copy.copy(run.collate)  # sends waveforms packed: no log-mel of the silence
            collate.pseudo_labels = labels
            widths, filled = [], []
            for rows in self.batches[:n]:
                batch = collate([(run.train_set.examples[i], silence) for i in rows])
                ids, targets, _, _ = join_sequences(batch, with_references=True)
                widths.append(ids.shape[1])
                filled.append(float((targets != -100).float().mean()))
            q = statistics.quantiles(widths, n=10)
            result[name] = {
                "mean_width": statistics.mean(widths),
                "median_width": statistics.median(widths),
                "p90_width": q[8],
                "target_share": statistics.mean(filled),
            }
        result["loop_label_tokens"], result["batches"] = c.loop_label_tokens, n
        return result

    def model_step(self, bar) -> dict:
        """The model step alone: one batch, already loaded, stepped on again and again."""
        fixed = next(self.loader("packed", 0, 1))
        return self.timed(bar, "model", iter(lambda: fixed, None), self.step)

    def measure(self) -> dict:
        a, n = self.args, self.args.warmup + self.args.repeats
        results, variants = {}, [(c, w) for c in self.collates for w in a.workers]
        with progress_bar() as bar:
            for c, w in variants:
                results[f"loader/{c}/w{w}"] = self.timed(
                    bar, f"loader/{c}/w{w}", self.loader(c, w, n), lambda b: None
                )
            if a.loader_only:
                return results
            results["model"] = self.model_step(bar)
            for c, w in variants:
                results[f"loop/{c}/w{w}"] = self.timed(bar, f"loop/{c}/w{w}", self.loader(c, w, n), self.step)
        return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="a corpus with pseudo-labels (ctxprune data pseudo-label)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 6])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--loader-only", action="store_true", help="time the loader variants only (CPU)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="then profile N model steps")
    ap.add_argument(
        "--widths", type=int, default=300, metavar="N", help="decoder pass widths over N batches (0: none)"
    )
    ap.add_argument("--widths-only", action="store_true", help="measure the decoder widths, nothing else")
    ap.add_argument(
        "--encoder-target",
        type=float,
        metavar="E",
        help="also time (and profile) the model step of a run with encoder gates at this target",
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/train_step.json"))
    args = ap.parse_args()
    if args.widths_only and not args.widths:
        ap.error("--widths-only needs --widths N with N > 0")
    if args.repeats < 2:
        ap.error("--repeats must be at least 2 (quartiles need two timings)")
    bench = Bench(args)
    widths = bench.decoder_widths(args.widths) if args.widths else None
    results = {} if args.widths_only else bench.measure()
    device = bench.device
    record = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "results": results,
    }
    if widths:
        record["decoder_widths"] = widths
    if args.profile and not args.widths_only:
        record["profile"] = {"decoder": bench.profiled(args.profile)}
    if args.encoder_target is not None and not (args.loader_only or args.widths_only):
        del bench  # one model on the device at a time
        both = Bench(args, encoder_target=args.encoder_target, **ENCODER_RUN)
        record["encoder_run"] = {"encoder_target": args.encoder_target, **ENCODER_RUN}
        with progress_bar() as bar:
            results["model/both"] = both.model_step(bar)
        if args.profile:
            record["profile"]["both"] = both.profiled(args.profile)
    write_json_atomic(args.out, record)
    for name, r in results.items():
        spread = f"[{r['p25_s']:.3f}-{r['p75_s']:.3f}]"
        print(f"{name:18s} mean {r['mean_s']:.3f} s  median {r['median_s']:.3f} {spread}")
    if widths:
        for name in ("as_cached", "loops_cut"):
            w = widths[name]
            print(
                f"decoder width, pseudo-labels {name:9s}: mean {w['mean_width']:.1f}, "
                f"p90 {w['p90_width']:.0f}, {w['target_share']:.0%} of positions carry a target"
            )
    for run, prof in record.get("profile", {}).items():
        launches, kernel_ms = prof["kernel_launches_per_step"], prof["kernel_ms_per_step"]
        print(
            f"profile of the {run} run's step: {launches:.0f} kernel launches, {kernel_ms:.1f} ms of kernels"
        )
        for phase in prof["phases"]:
            print(
                f"  {phase['phase']:32s} host {phase['host_ms']:8.1f} ms  device {phase['device_ms']:8.1f} ms"
            )
        for r in prof["by_device_time"][:12]:
            print(f"  {r['op'][:60]:60s} device {r['self_device_ms']:7.2f} ms  x{r['calls']:.0f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
