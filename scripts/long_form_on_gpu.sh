#!/usr/bin/env bash
# The GPU part of issue 16 on one H200: bench/long_form.py (ours dense and pruned, sequential and
# VAD-batched, on CUDA graphs, against HF's chunked pipeline) and the CUDA tests. Here = this machine;
# there = the device.
#
#   here:  scripts/long_form_on_gpu.sh pack        # .carry-xfer/1..N: the base model (CTranslate2 parts), the
#                                                  # wheels the device lacks, the long fixture; chunks that fit a call (gpu_env.sh chunk_size)
#   there: scripts/long_form_on_gpu.sh receive N   # one call per chunk, back to back (carry .carry-xfer/N)
#   there: scripts/long_form_on_gpu.sh run         # set up, CUDA tests, bench; JSON and logs under $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh

case "${1:-}" in
  pack)
    stage=$(mktemp -d) && mkdir -p "$stage"/{ct2,wheels,fixture}
    stage_model "$stage/ct2"
    device_wheels "$stage/wheels"
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --platform manylinux_2_28_x86_64 -d "$stage/wheels" onnxruntime==1.24.4 flatbuffers==25.12.19 \
      silero-vad==6.2.3 webvtt-py==0.6.0
    .venv/bin/python -c "from pathlib import Path; from ctxprune.data.long_fixture import build_long_fixture as b
b(Path('$stage/fixture'), 'en')"
    tar cf - -C "$stage" ct2 wheels fixture | xz -T2 -1 > "$stage/bundle.tar.xz"
    split_bundle "$stage/bundle.tar.xz"
    rm -rf "$stage" && du -sh .carry-xfer/* ;;
  receive) receive_chunk "$2" ;;
  run)
    check_bundle
    [ -d $P/ct2 ] || tar xJf $P/bundle.tar.xz -C $P
    remote_env
    python3 -m pip install -q --no-index --no-deps --target /tmp/site $P/wheels/*.whl 2>&1 | tail -2
    [ -f $P/cache/models/whisper-base/config.json ] || ctxprune model prepare --source $P/ct2
    mkdir -p $CTXPRUNE_CACHE/long_fixture && cp $P/fixture/* $CTXPRUNE_CACHE/long_fixture/
    nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
    python3 -m pytest -q --tb=line -p no:cacheprovider -m "not real" -k "cuda or graphs or timestamps or equals_hf" tests/longform/test_decoder.py tests/runtime 2>&1 | tail -25 \
      | tee "$OUT/cuda_tests.log" || true
    python3 bench/long_form.py --device cuda --systems "${SYSTEMS:-ours-dense-sequential,ours-dense-vad,ours-pruned-sequential,ours-pruned-vad,hf-pipeline-chunked}" \
      --out "$OUT/long_form_gpu.json" 2>&1 | grep -v Warning | tail -40 | tee "$OUT/long_form_gpu.log" ;;
  *) sed -n 2,9p "$0"; exit 2 ;;
esac
