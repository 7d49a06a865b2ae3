"""Bench: do the speaker vectors (`data/speaker.py`) tell a corpus's voices apart? For each voice, the
mean cosine between its own rows' vectors and the mean cosine to every other voice's rows, as JSON.

Usage: python bench/speaker_vectors.py CORPUS [--split test] [--rows 4] [--out results/speaker_vectors.json]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from ctxprune.data.audio import load_audio
from ctxprune.data.manifest import read_manifest
from ctxprune.data.speaker import embedder
from ctxprune.paths import write_json_atomic


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
    vectors = {v: embedder()([load_audio(args.corpus / e.audio) for e in es]) for v, es in rows.items()}
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
        args.out, {"bench": "speaker_vectors", "split": args.split, "rows": args.rows, "voices": voices}
    )
    for v, r in voices.items():
        print(f"{v:8s} {r['family']:7s} {r['language']}  within {r['within']:.3f}", end="")
        print(f"  to others {r['to_others']:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
