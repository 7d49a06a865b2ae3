"""Bench: Silero VAD over the long fixture, the package's stock model (one 32 ms frame per ONNX call, its
`get_speech_timestamps`) against the sequence model as `ctxprune.longform.vad` streams it (512 frames per
call, state carried across 60 s blocks, reading the file included; the stock path gets the audio
already loaded). Same probabilities? Same regions? How long? Median of the repeats after a warm-up.

Usage: python bench/vad_speed.py [--repeats 5] [--fixture-dir DIR] [--out results/vad_speed_cpu.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from array import array
from pathlib import Path

import numpy as np
import torch

from ctxprune.data.audio import load_audio
from ctxprune.data.long_fixture import build_long_fixture
from ctxprune.longform.audio_stream import AudioStream
from ctxprune.longform.vad import FRAME, TIMING, SpeechProbabilities, _model, speech_probabilities
from ctxprune.paths import cache_dir, write_json_atomic


def stock_probabilities(model, audio: torch.Tensor) -> list[float]:
    """The stock path: one call per frame, the last frame zero-padded (as `get_speech_timestamps`)."""
    model.reset_states()
    audio = torch.nn.functional.pad(audio, (0, -len(audio) % FRAME))
    return [model(audio[i : i + FRAME], 16000).item() for i in range(0, len(audio), FRAME)]


def timed(fn, repeats: int) -> tuple[list[float], object]:
    fn()  # warm-up
    seconds, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t0)
    return seconds, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--fixture-dir", type=Path, default=cache_dir() / "long_fixture")
    ap.add_argument("--out", type=Path, default=Path("results/vad_speed_cpu.json"))
    args = ap.parse_args()
    fixture = build_long_fixture(args.fixture_dir, "en")
    _model()  # imports silero_vad without changing torch's threads
    from silero_vad import load_silero_vad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        stock = load_silero_vad(onnx=True)
    audio = torch.from_numpy(load_audio(fixture.audio))
    stock_s, stock_probs = timed(lambda: stock_probabilities(stock, audio), args.repeats)
    ours_s, ours = timed(lambda: speech_probabilities(AudioStream(fixture.audio)), args.repeats)
    stock_regions = SpeechProbabilities(array("f", stock_probs), len(audio)).regions(TIMING)
    result = {
        "bench": "vad_speed",
        "fixture": {"audio": str(fixture.audio), "duration": fixture.duration},
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "frames": len(ours.probs),
        "max_probability_difference": float(np.abs(np.array(ours.probs) - np.array(stock_probs)).max()),
        "regions_equal": stock_regions == ours.regions(TIMING),
        "seconds": {"stock_frame_by_frame": stock_s, "sequence_streamed": ours_s},
        "median_seconds": {
            "stock_frame_by_frame": statistics.median(stock_s),
            "sequence_streamed": statistics.median(ours_s),
        },
    }
    result["speedup"] = (
        result["median_seconds"]["stock_frame_by_frame"] / result["median_seconds"]["sequence_streamed"]
    )
    write_json_atomic(args.out, result)
    print(
        {
            k: result[k]
            for k in ("frames", "max_probability_difference", "regions_equal", "median_seconds", "speedup")
        }
    )


if __name__ == "__main__":
    main()
