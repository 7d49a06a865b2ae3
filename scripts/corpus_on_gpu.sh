#!/usr/bin/env bash
# Build the corpus's audio on the GPU machine (16 cores) from a plan made here.
#
# The text sources (gettext catalogs, num2words, Babel, Faker) exist only here, and espeak-ng has no
# package registry there, so:
#   here:   scripts/corpus_on_gpu.sh prepare [PRESET] [SEED]
#           -> .carry/corpus/{plan.jsonl,build.json}, .carry/espeak (espeak-ng with its library closure),
#              .carry/wheels (soundfile, soxr: not installed there)
#   there:  scripts/corpus_on_gpu.sh synthesize [OUT] [WORKERS]     (carry .carry)
#           -> synthesizes the plan into OUT (default /root/persist/corpus), manifests included.
# `ctxprune data build` reuses a saved plan when the config matches, so no text source is needed there.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.carry

prepare() {
  local preset=${1:-full} seed=${2:-0}
  rm -rf "$CARRY" && mkdir -p "$CARRY/corpus" "$CARRY/espeak/debs" "$CARRY/wheels"
  "${CTXPRUNE:-.venv/bin/ctxprune}" data build --out "$CARRY/corpus" --preset "$preset" --seed "$seed" --plan-only
  (cd "$CARRY/espeak/debs" && apt-get download espeak-ng libespeak-ng1 espeak-ng-data libpcaudio0 libsonic0)
  for f in "$CARRY"/espeak/debs/*.deb; do dpkg -x "$f" "$CARRY/espeak/root"; done
  rm -rf "$CARRY/espeak/debs"
  mkdir -p "$CARRY/espeak/root/libs"
  LD_LIBRARY_PATH="$CARRY/espeak/root/usr/lib/x86_64-linux-gnu" ldd "$CARRY/espeak/root/usr/bin/espeak-ng" \
    | awk '/=>/ {print $3}' | grep -vE 'libc.so|libm.so|ld-linux|/root/usr/' \
    | xargs -r -I{} cp -L {} "$CARRY/espeak/root/libs/"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$CARRY/wheels" soundfile==0.14.0 soxr==1.1.0 cffi==2.0.0 pycparser==2.23
  du -sh "$CARRY"
}

synthesize() {
  local out=${1:-/root/persist/corpus} workers=${2:-16}
  local root; root=${ESPEAK_ROOT:-"$(pwd)/$CARRY/espeak/root"}
  python3 -m pip install -q --no-index --no-deps --target /tmp/site "$CARRY"/wheels/*.whl
  export PYTHONPATH="/tmp/site:$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$root/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export ESPEAK_DATA_PATH="$root/usr/lib/x86_64-linux-gnu/espeak-ng-data"
  mkdir -p "$out" && cp -n "$CARRY"/corpus/plan.jsonl "$CARRY"/corpus/build.json "$out"/
  local preset seed
  preset=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['config']['preset'])" "$out/build.json")
  seed=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['config']['seed'])" "$out/build.json")
  python3 -m ctxprune.cli data build --out "$out" --preset "$preset" --seed "$seed" --workers "$workers"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  synthesize) shift; synthesize "$@" ;;
  *) echo "usage: $0 prepare [PRESET] [SEED] | synthesize [OUT] [WORKERS]" >&2; exit 2 ;;
esac
