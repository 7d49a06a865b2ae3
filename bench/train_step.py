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

With `--loader-only` only the loader variants run (with `--workers 0`: the collate's own cost, in the
calling process; a CPU machine cannot take a batch of 64 through the model in useful time).

Usage: python bench/train_step.py CORPUS [--batch-size 64] [--workers 2 6] [--repeats 20] [--loader-only]
                                  [--out PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ctxprune.data.features import CHUNK_SAMPLES, pad_or_trim
from ctxprune.paths import write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.train.config import TrainConfig
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


class Bench:
    def __init__(self, args):
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
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, _ = run.task.loss(batch, 5_000, run.generator)
        run.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        run.optimizer.step()

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
            fixed = next(self.loader("packed", 0, 1))
            results["model"] = self.timed(bar, "model", iter(lambda: fixed, None), self.step)
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
    ap.add_argument("--out", type=Path, default=Path("bench/results/train_step.json"))
    args = ap.parse_args()
    if args.repeats < 2:
        ap.error("--repeats must be at least 2 (quartiles need two timings)")
    bench = Bench(args)
    results = bench.measure()
    device = bench.device
    record = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "results": results,
    }
    write_json_atomic(args.out, record)
    for name, r in results.items():
        spread = f"[{r['p25_s']:.3f}-{r['p75_s']:.3f}]"
        print(f"{name:18s} mean {r['mean_s']:.3f} s  median {r['median_s']:.3f} {spread}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
