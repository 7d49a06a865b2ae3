#!/usr/bin/env bash
# The GPU recipe for the full evaluation (issue 6). First scripts/train_on_gpu.sh receive 1..7 and setup
# (the base model and the corpus under /root/persist), restore-adapter and retune (the calibrated gate sets).
#
#   there: scripts/evaluate_on_gpu.sh collect        # the re-tuned runs as gate sets under /root/persist/gates
#                                                    # (the device's working tree is replaced at every call);
#                                                    # evaluate them with GATES=/root/persist/gates (default:
#                                                    # artifacts/gates, the shipped ones)
#   there: scripts/evaluate_on_gpu.sh eval SPLIT [RE] # dense, every gate set and the random baselines, in parallel
#                                                    # parts (one JSON each; `ctxprune report` joins them); RE
#                                                    # picks parts by name. SEEDS / SEEDS_BOTH: random seeds
#   there: scripts/evaluate_on_gpu.sh bench          # batch 1 and mixed batch 16: dense vs the decoder gate sets
#                                                    # (fp32); the runtime benches: scripts/bench_on_gpu.sh
#   there: scripts/evaluate_on_gpu.sh guarded DATA SET... # dense and the sets with the loop guard, in parallel
#   there: scripts/evaluate_on_gpu.sh pack           # $OUT: the gate sets (2 chunks), eval parts and bench
# Each step skips what is already done, so a call that ran out of time is resumed by repeating it.
# LIMIT (seconds per call, default 540) and BATCH (utterances decoded together, default 32) tune it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
remote_env
G=${GATES:-artifacts/gates} R=$P/results
MAX_TOKENS=96  # the longest reference is 20 words; capped so that collapsed gate sets cannot run on to 224
mkdir -p $R

parallel_parts() {  # NAME ARGS... lines on stdin; runs them all at once, each under the time limit
  while read -r name args; do
    [ -f "$R/$name.json" ] && continue
    # shellcheck disable=SC2086
    timeout "${LIMIT:-540}" python3 -m ctxprune.cli $args --json "$R/$name.json" > "$R/$name.log" 2>&1 &
  done
  wait || true
}

case "${1:-}" in
  collect)
    for card in $P/runs/retune-*/card.json; do
      run=$(dirname "$card") name=$(basename "$(dirname "$card")") && name=${name#retune-}
      rm -rf "$P/gates/$name" && mkdir -p "$P/gates/$name"
      cp -r "$run"/predictor/* "$run"/*.json "$run/config.yaml" "$run"/*.jsonl "$P/gates/$name/"
    done
    ls $P/gates ;;
  eval)
    split=$2
    common="eval --data $P/corpus --split $split --device cuda --threads 1 --max-new-tokens $MAX_TOKENS"
    gated="$common --batch-size ${BATCH:-32}"
    random="$common --batch-size 64 --no-dense"  # per-row masks; collapsed outputs run to the cap
    {
      echo "$split-dense $gated"
      for pair in decoder-flops-0.3 decoder-flops-0.5 decoder-flops-0.7 decoder-count-0.5 both-flops-0.3 \
        both-flops-0.5 both-flops-0.7; do
        echo "$split-$pair $gated --no-dense --gates $G/$pair-context --gates $G/$pair-static"
      done
      for rate in 0.3 0.5 0.7; do
        echo "$split-random-decoder-$rate $random --random $rate --random-where decoder --seeds ${SEEDS:-3}"
        echo "$split-random-both-$rate $random --random $rate --random-where both --seeds ${SEEDS_BOTH:-2}"
      done
    } | awk -v re="${3:-.}" '$1 ~ re' | parallel_parts  # RE matches the part's name only
    for log in "$R/$split"-*.log; do
      printf '%-36s %s\n' "$(basename "$log" .log)" "$([ -f "${log%.log}.json" ] && echo done || tr '\r' '\n' < "$log" | tail -1 | cut -c1-100)"
    done ;;
  bench)  # one after the other, nothing else running: timings
    gates=""
    for s in 0.3 0.5 0.7; do gates+=" --gates $G/decoder-flops-$s-context --gates $G/decoder-flops-$s-static"; done
    # shellcheck disable=SC2086
    [ -f $R/bench_gpu.json ] || ctxprune bench --data $P/corpus --split test --device cuda --batch 1 --batch 16 \
      --batch1-rows 9 --repeats 10 --warmup 2 $gates --json $R/bench_gpu.json 2>&1 | tail -20 ;;
  guarded)  # DATA GATE_SET...: dense and each set with the loop guard, one process each, side by side;
    # LIMIT rows per group (ROWS, default 100), the CPU evaluation's settings otherwise; JSON and logs to $OUT
    data=$2; shift 2
    run=(python3 -m ctxprune.cli eval --data "$data" --split test --limit "${ROWS:-100}" --max-new-tokens 160
      --batch-size 32 --device cuda --threads 2 --loop-guard)
    timeout "${LIMIT:-540}" "${run[@]}" --json "$OUT/dense.json" > "$OUT/dense.log" 2>&1 &
    for g in "$@"; do
      timeout "${LIMIT:-540}" "${run[@]}" --no-dense --gates "$g" --json "$OUT/$(basename "$g").json" \
        > "$OUT/$(basename "$g").log" 2>&1 &
    done
    wait; ls -l "$OUT" ;;
  pack)
    [ -d $P/gates ] && tar czf - -C $P gates | split -b 15M -d -a 1 - "$OUT/gates.tar.gz."
    tar czf "$OUT/results.tar.gz" -C $P results
    ls -l "$OUT" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
