#!/usr/bin/env bash
# Build the corpus's audio on the GPU machine (16 cores) from a plan made here.
#
# The text sources (gettext catalogs, fortunes, num2words, Babel, Faker) exist only here, and the voices
# have no package registry there, so:
#   here:   scripts/corpus_on_gpu.sh prepare [PRESET] [SEED]
#           -> .carry/corpus/{plan.jsonl,build.json}, .carry/espeak (espeak-ng with its library closure, and
#              Pico and MBROLA: pico2wave, libttspico, its language files, mbrola and its voices),
#              .carry/wheels (soundfile, soxr). MBROLA's German voices are 55 MB each: the bundle is about
#              120 MB as tar.xz, so it travels in 20 MB chunks, one per call, as the model does.
#           pico2wave and espeak-ng look for their data at paths compiled into them (/usr/share/pico/lang,
#           /usr/share/mbrola): there, those two paths are links into the bundle (data only).
#   there:  scripts/corpus_on_gpu.sh synthesize [OUT] [WORKERS]     (carry .carry)
#           -> synthesizes the plan into OUT (default /root/persist/corpus), manifests included.
# `ctxprune data build` reuses a saved plan when the config matches, so no text source is needed there.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.carry
. scripts/voice_links.sh

prepare() {
  local preset=${1:-full} seed=${2:-0}
  rm -rf "$CARRY" && mkdir -p "$CARRY/corpus" "$CARRY/espeak/debs" "$CARRY/wheels"
  "${CTXPRUNE:-.venv/bin/ctxprune}" data build --out "$CARRY/corpus" --preset "$preset" --seed "$seed" --plan-only
  (cd "$CARRY/espeak/debs" && apt-get download espeak-ng libespeak-ng1 espeak-ng-data libpcaudio0 libsonic0)
  for f in "$CARRY"/espeak/debs/*.deb; do dpkg -x "$f" "$CARRY/espeak/root"; done
  scripts/install_voices.sh --lists >/dev/null
  local apt=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$PWD/.make/apt-voices/sources.list.d"
             -o "Dir::State::Lists=$PWD/.make/apt-voices/lists")  # contrib and non-free (scripts/install_voices.sh)
  (cd "$CARRY/espeak/debs" && apt-get "${apt[@]}" download libttspico-utils libttspico0 libttspico-data libpopt0 \
    mbrola mbrola-de6 mbrola-de7 mbrola-fr1 mbrola-fr4 mbrola-en1 mbrola-us1)
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
  export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu:$root/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export ESPEAK_DATA_PATH="$root/usr/lib/x86_64-linux-gnu/espeak-ng-data"
  voice_data_links "$root"
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
