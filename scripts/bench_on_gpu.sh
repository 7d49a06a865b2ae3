#!/usr/bin/env bash
# The GPU recipe for the runtime benchmarks (issue 7). Here = this machine; there = the device.
#
#   here:  CORPUS=/path/to/full [CHUNK=14M] scripts/bench_on_gpu.sh pack  # .carry-model/1..N (the base
#                                                  # model, in chunks that fit a call beside the tree) and .carry/bench: the test rows
#                                                  # (ROWS, at least 16: what --rows and --batch read), wheels
#   there: scripts/train_on_gpu.sh receive N       # N = 1.., each call carrying .carry-model/N, back to back
#   there: scripts/bench_on_gpu.sh setup           # convert the model, install the wheels (carry .carry)
#   there: scripts/bench_on_gpu.sh run [ARGS]      # the CUDA tests and bench/runtimes.py ARGS (fp16; e.g.
#                                                  # --loop-guard --beam-rows 0); JSON, logs to $OUT
#   there: scripts/bench_on_gpu.sh ab OLD_TREE     # bench/runtimes.py of this tree and of OLD_TREE (a copy of an
#                                                  # earlier commit's src/ and bench/, carried) on the same machine
#   there: scripts/bench_on_gpu.sh cli-bench       # ctxprune bench (fp32, batch 1 and 16) to $OUT/bench_gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh

case "${1:-}" in
  pack)
    pack_model
    device_wheels .carry/wheels  # bench/runtimes.py imports the metrics (jiwer, rapidfuzz) and soundfile
    rm -rf .carry/bench && mkdir -p .carry/bench
    "${PYTHON:-.venv/bin/python}" - "$CORPUS" .carry/bench <<'PY'
import json, os, shutil, sys
from pathlib import Path
from ctxprune.data.manifest import read_manifest
from ctxprune.eval.latency import mixed_rows
corpus, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = {e.audio for e in mixed_rows(read_manifest(corpus, "test"), max(16, int(os.environ.get("ROWS", 16))))}
lines = [line for line in (corpus / "test.jsonl").read_text().splitlines() if json.loads(line)["audio"] in rows]
for audio in rows:
    (out / audio).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(corpus / audio, out / audio)
(out / "test.jsonl").write_text("\n".join(lines) + "\n")
PY
    du -sh .carry/bench .carry/wheels .carry-model/* ;;
  setup)
    remote_env
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/wheels/*.whl
    rm -rf $P/bench && cp -r .carry/bench $P/bench
    ctxprune model prepare --source $P/ct2 ;;
  run)
    remote_env
    { python3 -m pytest -q -p no:cacheprovider tests/runtime -k cuda 2>&1 || true; } | tail -3 | tee "$OUT/pytest_cuda.log"
    python3 bench/runtimes.py $P/bench --out "$OUT/runtimes_gpu.json" "${@:2}" 2>&1 | grep -v '^\[transformers\]' \
      | tee "$OUT/runtimes_gpu.log" | tail -40
    ;;
  ab)  # before/after a refactor: the same bench, inputs and machine, the new tree first, then the old
    remote_env
    { python3 -m pytest -q -p no:cacheprovider tests/runtime -k cuda 2>&1 || true; } | tail -3 | tee "$OUT/pytest_cuda.log"
    python3 bench/runtimes.py $P/bench --out "$OUT/runtimes_gpu.json" 2>&1 | grep -v '^\[transformers\]' \
      | tee "$OUT/runtimes_gpu.log" | tail -12
    runtimes_of_tree "$2" $P/bench --out "$OUT/runtimes_gpu_before.json" 2>&1 \
      | grep -v '^\[transformers\]' | tee "$OUT/runtimes_gpu_before.log" | tail -12
    ;;
  cli-bench)  # the CLI's own latency bench (fp32), dense against the decoder gate sets
    remote_env
    gates=""
    for s in 0.3 0.5 0.7; do gates+=" --gates artifacts/gates/decoder-flops-$s-context --gates artifacts/gates/decoder-flops-$s-static"; done
    # shellcheck disable=SC2086
    ctxprune bench --data $P/bench --split test --device cuda --batch 1 --batch 16 --batch1-rows 9 --repeats 10 \
      --warmup 2 $gates --json "$OUT/bench_gpu.json" 2>&1 | tail -24 | tee "$OUT/bench_gpu.log" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
