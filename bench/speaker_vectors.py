"""Bench: do the speaker vectors (`data/speaker.py`) tell a corpus's voices apart? For each voice, the
mean cosine between its own rows' vectors and the mean cosine to every other voice's rows, as JSON;
and what embedding costs on this machine (one thread, as the cache is made): seconds per file, each
voice's rows one timed call after a warm-up file, median and quartiles over the voices; and per 30 s
window, what `transcribe` and `serve` embed for a gate set that reads the speaker (each voice's rows
joined and repeated to 30 s, one timed call per voice).

Usage: python bench/speaker_vectors.py CORPUS [--split test] [--rows 4] [--out results/speaker_vectors.json]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import numpy as np

from ctxprune.data.audio import load_audio
from ctxprune.data.manifest import read_manifest
from ctxprune.data.speaker import embedder
from ctxprune.paths import write_json_atomic

WINDOW = 30 * 16_000  # a long-form window's samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--rows", type=int, default=4, help="transcription rows per voice")
    ap.add_argument("--out", type=Path, default=Path("results/speaker_vectors.json"))
    args = ap.parse_args()
    if args.rows < 2:
        ap.error("--rows must be at least 2 (a voice's own rows are compared with each other)")
    by_voice: dict[str, list] = {}
    for e in read_manifest(args.corpus, args.split, with_reference=False):
        if e.task == "transcribe":
            by_voice.setdefault(e.voice, []).append(e)
    rows = {v: es[: args.rows] for v, es in sorted(by_voice.items()) if len(es) >= args.rows}
    audio = {v: [load_audio(args.corpus / e.audio) for e in es] for v, es in rows.items()}
    start = time.perf_counter()
    embed = embedder()
    open_s = time.perf_counter() - start
    embed(next(iter(audio.values()))[:1])  # warm-up: the feature code's first call compiles
    vectors, per_file = {}, []
    for v, chunks in audio.items():
        start = time.perf_counter()
        vectors[v] = embed(chunks)
        per_file.append((time.perf_counter() - start) / len(chunks))
    per_window = []
    for chunks in audio.values():
        joined = np.concatenate(chunks)
        window = np.tile(joined, -(-WINDOW // len(joined)))[:WINDOW]
        start = time.perf_counter()
        embed([window])
        per_window.append(time.perf_counter() - start)
    seconds = sum(len(c) for cs in audio.values() for c in cs) / 16_000 / sum(map(len, audio.values()))
    q, qw = statistics.quantiles(per_file, n=4), statistics.quantiles(per_window, n=4)
    cost = {"open_s": open_s, "s_per_file_median": statistics.median(per_file), "s_per_file_p25": q[0]}
    cost |= {"s_per_file_p75": q[2], "audio_s_per_file": seconds, "threads": 1}
    cost |= {"s_per_30s_window_median": statistics.median(per_window), "s_per_30s_window_p25": qw[0]}
    cost |= {"s_per_30s_window_p75": qw[2]}
    voices = {}
    for v, own in vectors.items():
        same = [float(a @ b) for a, b in itertools.combinations(own, 2)]
        other = [float((own @ w.T).mean()) for u, w in vectors.items() if u != v]
        voices[v] = {
            "family": rows[v][0].family,
            "language": rows[v][0].language,
            "within": sum(same) / len(same),
            "to_others": sum(other) / len(other),
        }
    write_json_atomic(
        args.out,
        {"bench": "speaker_vectors", "split": args.split, "rows": args.rows, "cost": cost, "voices": voices},
    )
    for v, r in voices.items():
        print(f"{v:8s} {r['family']:7s} {r['language']}  within {r['within']:.3f}", end="")
        print(f"  to others {r['to_others']:.3f}")
    print(
        f"embedding: {cost['s_per_file_median']:.3f} s per file [{q[0]:.3f}-{q[2]:.3f}] for "
        f"{seconds:.1f} s of audio on average, one thread; {open_s:.1f} s to open the graphs"
    )
    print(f"a 30 s window: {cost['s_per_30s_window_median']:.2f} s [{qw[0]:.2f}-{qw[2]:.2f}], one thread")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
