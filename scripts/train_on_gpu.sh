#!/usr/bin/env bash
# The GPU recipe that produces the shipped artifacts (issue 5). Here = this machine; there = the device.
#
#   here:  scripts/train_on_gpu.sh pack            # .carry-model/1..N: the base model in chunks (each call
#                                                  # carries one beside the working tree, under the 64 MiB
#                                                  # limit: gpu_env.sh chunk_size); .carry: corpus plan,
#                                                  # espeak-ng bundle (xz), wheels
#   there: scripts/train_on_gpu.sh receive N       # N = 1..N, each call carrying .carry-model/N, back to back
#   there: scripts/train_on_gpu.sh setup           # verify sha256, convert the model, synthesize the corpus (carry
#                                                  # .carry, in the next call)
#   there: scripts/train_on_gpu.sh adapt [STEPS]   # LoRA on the corpus (or restore-adapter: artifacts/lora-adapter)
#   there: scripts/train_on_gpu.sh gates SPEC...   # SPEC = target:where:sparsity_by:kind, kind = context|static;
#                                                  # repeat the call until every run has its card
#   there: scripts/train_on_gpu.sh retune          # calibrate every shipped gate set on dev, re-tune its LoRA on
#                                                  # the calibrated masks (repeat the call until all have cards)
#   there: scripts/train_on_gpu.sh pack-results    # $OUT/<run>.tar.gz: adapters, predictors, cards, logs
# scripts/evaluate_on_gpu.sh takes it from there (evaluation and benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh

case "${1:-}" in
  pack)
    pack_model
    scripts/corpus_on_gpu.sh prepare full 0
    tar cJf .carry/espeak.tar.xz -C .carry espeak && rm -rf .carry/espeak
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .carry/wheels jiwer==4.0.0 rapidfuzz==3.14.3
    du -sh .carry .carry-model/* ;;
  receive)
    mkdir -p $P/ct2
    [ "$2" = 1 ] && rm -f $P/ct2/model.bin
    for f in config.json tokenizer.json; do [ -f ".carry-model/$2/$f" ] && cp ".carry-model/$2/$f" $P/ct2/; done
    cat ".carry-model/$2/chunk" >> $P/ct2/model.bin
    ls -l $P/ct2 ;;
  setup)
    mkdir -p $P/espeak && tar xJf .carry/espeak.tar.xz -C $P
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
    mkdir -p $P/runs/adapter/adapter && cp -r artifacts/lora-adapter/* $P/runs/adapter/adapter/ && ls $P/runs/adapter ;;
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
  retune)
    # Calibrate each shipped gate set on dev (its logit shifts), then re-tune its LoRA on the calibrated
    # masks (the predictor stays frozen). RETUNE_STEPS (default 150) at batch 16, all at once.
    remote_env
    for gate_set in artifacts/gates/*/; do
      name=$(basename "$gate_set") out=$P/runs/retune-$(basename "$gate_set")
      [ -f "$out/card.json" ] && { echo "$name done"; continue; }
      read -r target where by context < <(python3 -c "import json,sys; c=json.load(open(sys.argv[1]));
print(c['target_sparsity'], c['where'], c['sparsity_by'], ','.join(c['context']) or 'none')" "$gate_set/card.json")
      timeout "${LIMIT:-540}" python3 -m ctxprune.cli train gates --data $P/corpus --out "$out" --resume \
        --start-from "$gate_set" --adapter $P/runs/adapter/adapter --target "$target" --where "$where" \
        --sparsity-by "$by" --context "$context" --steps "${RETUNE_STEPS:-150}" --batch-size 16 \
        --set deterministic_tail=1.0 --set target_warmup=0 --set warmup=10 --set train_lora=true \
        --set lora_rank=8 --set lora_alpha=16 --set "lora_lr=${LORA_LR:-5e-4}" --set workers=1 \
        --set eval_every=0 --set eval_limit=50 --set save_every=25 > "$out.log" 2>&1 &
    done
    wait || true
    python3 scripts/summarize_runs.py $P/runs 'retune-*' ;;
  pack-results)
    for run in $P/runs/*/; do  # one archive per run: each must stay under the 16 MB transfer limit
      name=$(basename "$run"); tar czf "$OUT/$name.tar.gz" --exclude=checkpoint -C $P/runs "$name"
    done
    ls -l "$OUT" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
