#!/usr/bin/env bash
# The GPU part of issue 17 on one H200: bench/serve_load.py against `ctxprune serve --device cuda`, dense
# against a context-aware decoder 0.5 gate set and against the shipped static set. Here = this machine;
# there = the device.
#
#   here:  scripts/serve_on_gpu.sh pack        # .carry-xfer/1..N: the base model (CTranslate2 parts), the
#                                              # wheels the device lacks, the bench workload, the context set
#   there: scripts/serve_on_gpu.sh receive N   # one call per chunk, back to back (carry .carry-xfer/N)
#   there: scripts/serve_on_gpu.sh context     # set up; dense vs the context-aware set (on the corpus
#                                              # adapter), three batching policies, overload; JSON in $OUT
#   there: scripts/serve_on_gpu.sh static      # dense vs the shipped static set (Whisper base)
#
# The context-aware decoder 0.5 set is the one results/runtimes_gpu.json measured (removed from
# artifacts/ by commit 6346808, trained on the corpus adapter): `git archive 6346808^` brings it back.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
CONTEXT_SET=decoder-flops-0.5-context

setup() {
  check_bundle
  [ -d $P/ct2 ] || tar xJf $P/bundle.tar.xz -C $P
  remote_env
  python3 -m pip install -q --no-index --no-deps --target /tmp/site $P/wheels/*.whl 2>&1 | tail -2
  [ -f $P/cache/models/whisper-base/config.json ] || ctxprune model prepare --source $P/ct2
  nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
}

bench() {  # $1: out name; the rest: bench arguments
  local name=$1; shift
  python3 -u bench/serve_load.py --device cuda --dtype fp16 --workload $P/workload --max-batch 32 --max-queue 32 \
    --out "$OUT/$name.json" "$@" 2>&1 | grep --line-buffered -v Warning | tee "$OUT/$name.log"
}

case "${1:-}" in
  pack)
    stage=$(mktemp -d) && mkdir -p "$stage"/{ct2,wheels}
    stage_model "$stage/ct2"
    device_wheels "$stage/wheels"
    # the versions pinned here (pyproject and the venv), for Python 3.12 there
    wheels=$(for p in silero-vad fastapi starlette uvicorn python-multipart pydantic pydantic-core annotated-types \
      typing-inspection typing-extensions httpx2 httpcore2 truststore typer rich opentelemetry-api; do
      echo "$p==$(.venv/bin/pip show "$p" | sed -n 's/^Version: //p')"; done)
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$stage/wheels" $wheels
    git archive 6346808^ artifacts/gates/$CONTEXT_SET | tar -x -C "$stage"
    mv "$stage/artifacts/gates/$CONTEXT_SET" "$stage/" && rm -rf "$stage/artifacts"
    env -u CTXPRUNE_CACHE .venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); from serve_load import build_workload, DEMO_CORPUS
from pathlib import Path; build_workload(Path('$stage/workload'), DEMO_CORPUS)"
    tar cf - -C "$stage" ct2 wheels workload $CONTEXT_SET | xz -T2 -1 > "$stage/bundle.tar.xz"
    split_bundle "$stage/bundle.tar.xz"
    rm -rf "$stage" && du -sh .carry-xfer/* ;;
  receive) receive_chunk "$2" ;;
  context)
    setup
    bench serve_load_gpu_context --gates $P/$CONTEXT_SET --adapter artifacts/lora-adapter \
      --policies "${POLICIES:-static,grouped,continuous}" --concurrency "${LEVELS:-1,8,32}" \
      --duration "${DURATION:-8}" --overload-duration "${OVERLOAD_S:-30}" ;;
  static)
    setup
    bench serve_load_gpu_static --gates artifacts/gates/decoder-flops-0.5-static \
      --policies "${POLICIES:-continuous}" --concurrency "${LEVELS:-1,8,32}" --duration "${DURATION:-8}" \
      --overload-duration "${OVERLOAD_S:-30}" ;;
  *) sed -n 2,13p "$0"; exit 2 ;;
esac
