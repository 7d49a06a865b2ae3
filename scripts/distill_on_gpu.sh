#!/usr/bin/env bash
# The GPU recipe of issue 15: gate sets distilled from Whisper base (no adapter), on nvidia-h200-x2 (or one H200).
# Here = this machine; there = the device.
#
#   here:  CORPUS=/path/to/full scripts/distill_on_gpu.sh pack
#                       # (TEST_ROWS, UNSEEN_ROWS: a larger test or unseen-voice split, `data build
#                       # --test-rows/--unseen-rows`, as CORPUS was planned; setup reads them from the plan)
#                       # .carry-xfer/1..N: one xz stream of the base model (CTranslate2 parts), the voices
#                       # (espeak-ng, Pico, MBROLA), wheels and the full corpus plan, in chunks that fit a
#                       # call beside the tree (gpu_env.sh chunk_size; CHUNK overrides)
#   here:  scripts/distill_on_gpu.sh rechunk     # the same bundle in smaller chunks, when the tree has grown
#                                                # since pack (a call carries the tree and one chunk)
#   there: scripts/distill_on_gpu.sh receive N     # one call per chunk, back to back (carry .carry-xfer/N)
#                                                  # (receive reads neither results/ nor artifacts/, 81 of
#                                                  # the tree's 83 MB: moved out of the working tree for
#                                                  # those calls, chunks can be CHUNK=56M, 5 calls in all;
#                                                  # later calls need artifacts/ but not results/, so move
#                                                  # results/ out for them: the tree is over a call's 64 MiB
#                                                  # (without results/ it is 63.7 MiB: a call that carries
#                                                  # anything beside the tree moves the gate sets it does
#                                                  # not use out too, e.g. both-flops-0.3-enc0.33-context,
#                                                  # 17 MiB);
#                                                  # never `git commit -a` while they are away: it records
#                                                  # both folders as deleted)
#   there: scripts/distill_on_gpu.sh setup         # verify, unpack, convert the model, synthesize the corpus
#                                                  # (EVAL_ONLY=1: all but its train split, for eval alone);
#                                                  # gate sets to continue from, if carried in .carry-start/,
#                                                  # are kept in /root/persist/start/
#   there: scripts/distill_on_gpu.sh label         # the teacher's pseudo-labels of the train split; the
#                                                  # single-module damage table (bench/module_damage.py)
#   there: scripts/distill_on_gpu.sh bench         # a training step's time: loader, model, both, and where
#                                                  # the model step's time goes (profiler; JSON)
#   there: scripts/distill_on_gpu.sh ddp STEPS     # the same run on 1 GPU and under torchrun on 2: samples/s
#   there: scripts/distill_on_gpu.sh speaker-embed # speaker d-vectors of every $EVERY-th train audio file
#                                                  # (default 4), on all cores: the subset a speaker A/B
#                                                  # trains on (EVERY=4 train ...; names end -every4)
#   there: scripts/distill_on_gpu.sh train SPEC... # SPEC = target:where:by:kind:seed[:encoder_target][+FLAG...][@GATESET]
#                                                  # (+speed: on speed-perturbed audio, factors $SPEED,
#                                                  # default 0.9,1.0,1.1, data/perturb.py; name ends -speed)
#                                                  # (+task: each task's rows hold the target on their own,
#                                                  # budget_per=task; name ends -taskbudget)
#                                                  # (+speaker: the speaker vector as context too; name
#                                                  # ends -speaker; needs +everyN or EVERY, and
#                                                  # speaker-embed first)
#                                                  # (+everyN: on every N-th train audio file only, the
#                                                  # speaker cache's subset; EVERY sets it for all runs;
#                                                  # name ends -everyN)
#                                                  # (+wide: a decoder run with the encoder runs' LoRA,
#                                                  # rank 64, and hidden states distilled; name ends -wide)
#                                                  # (+onpolicyN: on-policy distillation, the student's own
#                                                  # greedy outputs in the KL every N-th step once the target
#                                                  # ramp is over; bare +onpolicy: every step; name ends
#                                                  # -onpolicyN)
#                                                  # (+stepsN: this run's steps, in place of STEPS, so that
#                                                  # runs matching earlier seeds of other lengths share a call)
#                                                  # (@: continue from that trained set, its target reached
#                                                  # from the first step, gates at GATE_LR, default 2e-3); runs
#                                                  # spread over the GPUs (at most five per H200: six ran out
#                                                  # of memory); repeat the call until all have cards. Each
#                                                  # call returns the runs (no checkpoints) in $OUT, so a
#                                                  # machine lost between calls costs the schedule, not the
#                                                  # runs (here: cat runs.tar.gz.* | tar xz)
#                                                  # (a call the device stops returns nothing: give train
#                                                  # its own call, LIMIT below the call's and the budget's)
#   here or there: scripts/distill_on_gpu.sh plan SPEC...  # what train would run for each SPEC, runs nothing
#   there: scripts/distill_on_gpu.sh eval SPLIT    # dense and every finished set (and the sets in ALSO), in
#                                                  # parallel parts, with the loop guard; PARTS splits each
#                                                  # candidate's rows by group too ("transcribe/de,translate/de
#                                                  # transcribe/en ...": one process per part and candidate;
#                                                  # `ctxprune report` joins the parts; DENSE=DIR takes
#                                                  # dense's files from an earlier eval, carried in DIR)
#   there: scripts/distill_on_gpu.sh runtimes SET...  # bench/runtimes.py (fp16, CUDA graphs, loop guard;
#                                                  # ROWS, REPEATS) for shipped sets and ones evaluated here
#                                                  # (OLD=DIR: then the same bench from DIR/src and DIR/bench,
#                                                  # an earlier commit's, carried: `git archive REV src bench
#                                                  # | tar x -C .carry-old`; runtimes_gpu_before.json)
#   there: scripts/distill_on_gpu.sh pack-results  # $OUT: gate sets, logs, eval parts, tables
# LIMIT (seconds per call, default 540), STEPS (default 3000), BATCH (default 64), EVALS (dev evaluations
# per run, default 6), EVAL_LIMIT (rows per task and language in eval; default all), GUARD (0: eval without
# the loop guard, as the campaigns before it were evaluated; eval writes into results/SPLIT-ROWSrows[-noguard]/),
# BRANCH_TIMES (train: latency runs weigh this branch_times.json instead of measuring their own)
# The bench takes REPEATS (default 12), WORKERS (loader processes to compare, default "2 6") and PROFILE (profiled
# steps, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
R=$P/results

save_runs() {  # $OUT/runs.tar.gz.00, .01, ...: every run but its checkpoints (15 MB pieces: $OUT's file limit)
  tar czf - --exclude=checkpoint -C $P runs | split -b 15M -d - "$OUT/runs.tar.gz."
}

save_results() { tar czf "$OUT/results.tar.gz" -C $P results; }  # the evaluations and benches

run_plan() {  # SPEC -> $out (the run's directory), $by, and $args (its `ctxprune train gates` arguments)
  local spec=$1 flags flag target where kind seed enc start="" speed="" budget="" speaker="" wide="" onpolicy="" every=${EVERY:-} steps=${STEPS:-3000}
  [[ "$spec" == *@* ]] && start=${spec#*@} spec=${spec%%@*}
  IFS=+ read -r spec flags <<< "$spec"
  for flag in ${flags//+/ }; do
    case "$flag" in
      speaker) speaker=1 ;; task) budget=task ;; speed) speed=${SPEED:-0.9,1.0,1.1} ;; wide) wide=1 ;;
      every[0-9]*) every=${flag#every} ;; steps[0-9]*) steps=${flag#steps} ;; onpolicy) onpolicy=1 ;;
      onpolicy[0-9]*) onpolicy=${flag#onpolicy} ;; *) echo "unknown run flag +$flag"; exit 2 ;;
    esac
  done
  IFS=: read -r target where by kind seed enc <<< "$spec"
  local context=task,language,audio,encoder${speaker:+,speaker}; [ "$kind" = static ] && context=none
  out="$P/runs/$where-$by-$target-$kind-seed$seed${enc:+-enc$enc}${start:+-continued}${speed:+-speed}${budget:+-taskbudget}"
  out+="${wide:+-wide}${onpolicy:+-onpolicy$onpolicy}${speaker:+-speaker}${every:+-every$every}"
  local ramp=$((steps / 3)) lr=1e-2
  local extra=(--set lora_rank=16 --set lora_alpha=32) options=(${speed:+--set "speed_perturb=[$speed]"}
    ${budget:+--set budget_per=$budget} ${every:+--set train_every_audio=$every} ${onpolicy:+--set onpolicy_every=$onpolicy})
  if [ -n "$start" ]; then  # the mask is learned: hold the target, move gates gently, tune the LoRA on
    ramp=0 lr=${GATE_LR:-2e-3} options+=(--set "start_from=$start")
  fi
  # encoder gates (and +wide decoder runs): the larger LoRA and the hidden states distilled too
  if [ "$where" = both ] || [ -n "$wide" ]; then extra=(--set lora_rank=64 --set lora_alpha=64 --set hidden_weight=1.0); fi
  if [ "$where" = both ]; then extra+=(--encoder-target "$enc"); fi
  # latency runs weigh one set of branch times, measured by the first on an idle GPU
  if [ "$by" = latency ]; then extra+=(--set "branch_times=$P/runs/branch_times.json"); fi
  args=(train gates --data $P/corpus --out "$out" --resume --target "$target" --where "$where" --sparsity-by "$by"
    --context "$context" --steps "$steps" --batch-size "${BATCH:-64}" --set seed="$seed"
    --set lr=$lr --set alpha=100 --set "target_warmup=$ramp" --set warmup=50
    --set train_lora=true --set lora_lr=5e-4 "${extra[@]}" "${options[@]}" --set workers=4
    --set "eval_every=$((steps / ${EVALS:-6}))" --set eval_limit=10 --set save_every=100)
}

case "${1:-}" in
  pack)
    # espeak-ng, Pico and MBROLA with their library closure (scripts/corpus_on_gpu.sh prepare makes it)
    [ -d .carry/espeak/root ] || scripts/corpus_on_gpu.sh prepare full 0
    stage=$(mktemp -d) && mkdir -p "$stage"/{wheels,corpus}
    stage_model "$stage/ct2"
    device_wheels "$stage/wheels"
    .venv/bin/ctxprune data build --out "$stage/corpus" --preset full --seed 0 --plan-only \
      ${TEST_ROWS:+--test-rows $TEST_ROWS} ${UNSEEN_ROWS:+--unseen-rows $UNSEEN_ROWS}
    cmp "$stage/corpus/plan.jsonl" "${CORPUS:?set CORPUS to the full corpus built here}/plan.jsonl"
    tar cf - -C "$stage" ct2 wheels corpus -C "$PWD/.carry/espeak" root | xz -T2 -2 > "$stage/bundle.tar.xz"
    split_bundle "$stage/bundle.tar.xz"
    rm -rf "$stage" && du -sh .carry-xfer/* ;;
  rechunk)
    stage=$(mktemp -d) && sha=$(cat .carry-xfer/1/sha256)
    for n in $(ls .carry-xfer | sort -n); do cat ".carry-xfer/$n/chunk"; done > "$stage/bundle.tar.xz"
    [ "$(sha256sum "$stage/bundle.tar.xz" | cut -d' ' -f1)" = "$sha" ] || { echo "the chunks do not make the packed bundle"; exit 1; }
    split_bundle "$stage/bundle.tar.xz"
    rm -rf "$stage" && echo "$(ls .carry-xfer | wc -l) chunks of $(chunk_size)" ;;
  receive) receive_chunk "$2" ;;
  setup)
    check_bundle
    if [ ! -d $P/espeak/root ]; then
      mkdir -p $P/espeak && tar xJf $P/bundle.tar.xz -C $P && mv $P/root $P/espeak/root
    fi
    remote_env
    python3 -m pip install -q --no-index --no-deps --target /tmp/site $P/wheels/*.whl
    [ ! -d .carry-start ] || { mkdir -p $P/start && cp -r .carry-start/. $P/start/; }
    [ -f $P/cache/models/whisper-base/config.json ] || ctxprune model prepare --source $P/ct2
    # the test and unseen-voice rows the bundle's plan was made with (TEST_ROWS, UNSEEN_ROWS at pack)
    rows=$(python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["config"]
print(*(f"--{flag} {c[k]}" for k, flag in (("test_rows", "test-rows"), ("unseen_rows", "unseen-rows")) if c.get(k)))' \
      $P/corpus/build.json)
    # EVAL_ONLY=1: no train audio (a minute less of synthesis); label and train then need a fresh machine
    [ "${EVAL_ONLY:-0}" = 0 ] || { grep -v '"split": "train"' $P/corpus/plan.jsonl > $P/plan.eval && mv $P/plan.eval $P/corpus/plan.jsonl; }
    ctxprune data build --out $P/corpus --preset full --seed 0 $rows --workers "$(nproc)" | tail -4 ;;
  label)
    remote_env; mkdir -p $R
    gpus=$(nvidia-smi -L | wc -l)
    # the damage table on the second GPU, where there is one (on one GPU it would slow the labels)
    [ -f $R/module_damage.json ] || [ "$gpus" -lt 2 ] || CUDA_VISIBLE_DEVICES=$((gpus - 1)) python3 \
      bench/module_damage.py $P/corpus --split test --limit 20 --out $R/module_damage.json > $R/module_damage.log 2>&1 &
    # the committed labels of the full corpus (seed 0) by Whisper base, from an earlier run of this step
    # ($OUT/pseudo_labels.tar.gz): the labeller only decodes the rows they lack
    tar xzf artifacts/pseudo-labels/full-seed0-base.tar.gz -C $P/corpus
    CUDA_VISIBLE_DEVICES=0 ctxprune data pseudo-label $P/corpus --batch-size 128 --workers 12 | tail -2
    tar czf "$OUT/pseudo_labels.tar.gz" -C $P/corpus pseudo_labels
    wait; [ ! -f $R/module_damage.log ] || grep -v USDT $R/module_damage.log | tail -33 ;;
  bench)
    # where a training step's time goes: loader alone, model step alone, both (bench/train_step.py)
    remote_env; mkdir -p $R
    python3 bench/train_step.py $P/corpus --workers ${WORKERS:-2 6} --repeats "${REPEATS:-12}" --profile "${PROFILE:-3}" --encoder-target 0.3 \
      --out $R/train_step.json 2>&1 | grep -v USDT ;;
  ddp)
    # The same decoder run for STEPS steps of BATCH utterances per process: on one GPU, then on two under
    # torchrun (twice the utterances per step); nothing else runs meanwhile.
    remote_env; mkdir -p $R
    args=(gates --data $P/corpus --target 0.5 --where decoder --sparsity-by flops --steps "${2:-150}"
          --batch-size "${BATCH:-64}" --set train_lora=true --set lora_rank=16 --set lora_alpha=32 --set workers=6
          --set eval_every=0 --set eval_limit=2 --set calibrate=false --set save_every=100000 --set log_every=10 --set deterministic_tail=0)
    rm -rf $P/ddp && mkdir -p $P/ddp
    python3 -m ctxprune.cli train "${args[@]}" --out $P/ddp/gpu1 > $P/ddp/gpu1.log 2>&1
    torchrun --standalone --nproc_per_node 2 -m ctxprune.cli train "${args[@]}" --out $P/ddp/gpu2 > $P/ddp/gpu2.log 2>&1
    python3 scripts/ddp_speedup.py $P/ddp/gpu1 $P/ddp/gpu2 --out $R/ddp_speedup.json ;;
  plan) shift; for spec in "$@"; do run_plan "$spec"; echo "$(basename "$out"): ctxprune ${args[*]}"; done ;;
  train)
    remote_env; shift; mkdir -p $P/runs
    # BRANCH_TIMES: an earlier step's times, so that latency runs weigh the branches as the sets they are
    # compared with did (a fresh machine would measure its own)
    [ -z "${BRANCH_TIMES:-}" ] || [ -f $P/runs/branch_times.json ] || cp "$BRANCH_TIMES" $P/runs/branch_times.json
    # one deadline for the call: a run started late (after the wait for the branch times) stops with the rest
    gpus=$(nvidia-smi -L | wc -l) n=0 deadline=$((SECONDS + ${LIMIT:-540}))
    for spec in "$@"; do run_plan "$spec"; done  # a bad spec stops the call before any run starts
    for spec in "$@"; do
      run_plan "$spec"
      [ -f "$out/card.json" ] && { echo "$out done"; n=$((n + 1)); continue; }
      CUDA_VISIBLE_DEVICES=$((n % gpus)) timeout $((deadline - SECONDS > 1 ? deadline - SECONDS : 1)) \
        python3 -m ctxprune.cli "${args[@]}" >> "$out.log" 2>&1 &
      if [ "$by" = latency ]; then  # wait for the shared times (the first latency run writes them)
        for _ in $(seq 120); do [ -f $P/runs/branch_times.json ] && break; sleep 1; done
      fi
      n=$((n + 1))
    done
    wait || true
    save_runs  # a machine released between calls loses /root/persist: every call brings the runs home
    for log in $P/runs/*.log; do echo "$(basename "$log"): $(tr '\r' '\n' < "$log" | grep -v '^\s*$' | grep -v USDT | tail -1 | cut -c1-140)"; done ;;
  eval)
    remote_env; mkdir -p $R $P/gates
    for card in $P/runs/*/card.json; do
      [ -f "$card" ] || continue  # no runs on this machine: only dense and the sets in ALSO
      run=$(dirname "$card") name=$(basename "$(dirname "$card")")
      [ -d "$P/gates/$name" ] || { mkdir -p "$P/gates/$name" && cp -r "$run"/predictor/* "$run"/*.json "$run"/config.yaml "$run"/*.jsonl "$P/gates/$name/"; }
    done
    for g in ${ALSO:-}; do rm -rf "$P/gates/$(basename "$g")" && cp -r "$g" "$P/gates/"; done  # fresh: a name may be reused
    dir=$R/$2-${EVAL_LIMIT:-all}rows && [ "${GUARD:-1}" != 0 ] || dir+=-noguard
    mkdir -p "$dir"
    # DENSE: an earlier eval's dense files of this split and rows (carried), so that dense is not decoded
    # again (one candidate in four of a 3-set eval); `ctxprune report` refuses them if their rows differ
    [ -z "${DENSE:-}" ] || cp "$DENSE"/dense*.json "$dir"/
    common=(eval --data $P/corpus --split "$2" --device cuda --threads 1 --max-new-tokens 160 --batch-size 32
      ${EVAL_LIMIT:+--limit $EVAL_LIMIT})
    [ "${GUARD:-1}" = 0 ] || common+=(--loop-guard)
    parts=(${PARTS:-all})  # PARTS: one process per part and candidate; a part is comma-separated groups
    run_parts() {  # $1: the candidate's name; the rest: its options
      local name=$1 k=0 part file g groups; shift
      for part in "${parts[@]}"; do
        k=$((k + 1)) file=$dir/$name.json groups=()
        if [ "$part" != all ]; then
          file=$dir/$name.part$k.json
          for g in ${part//,/ }; do groups+=(--group "$g"); done
        fi
        [ -f "$file" ] || timeout "${LIMIT:-540}" python3 -m ctxprune.cli "${common[@]}" "$@" "${groups[@]}" \
          --json "$file" > "${file%.json}.log" 2>&1 &
      done
    }
    run_parts dense
    for g in $P/gates/*/; do run_parts "$(basename "$g")" --no-dense --gates "$g"; done
    wait || true
    save_results
    ls "$dir" ;;
  speaker-embed)
    remote_env
    ctxprune data speaker-embed $P/corpus --split train --every "${EVERY:-4}" --workers "$(nproc)" | tail -1 ;;
  runtimes)
    # bench/runtimes.py on the synthesized test split (the rows scripts/bench_on_gpu.sh packs), for the
    # shipped sets and the sets this machine trained and evaluated ($P/gates), named as arguments
    remote_env; mkdir -p $R  # ([ -d ]: before any eval there is no $P/gates, and the glob stays a literal)
    for g in $P/gates/*/; do [ -d "$g" ] || continue; [ -d "artifacts/gates/$(basename "$g")" ] || cp -r "$g" artifacts/gates/; done
    [ "${TESTS:-1}" = 0 ] || { timeout 120 python3 -m pytest -q -p no:cacheprovider tests/runtime -k cuda 2>&1 || true; } | tail -3
    args=($P/corpus --rows "${ROWS:-27}" --loop-guard --beam-rows 0 --repeats "${REPEATS:-5}" --warmup 1 --gate-sets "${@:2}")
    python3 bench/runtimes.py "${args[@]}" --out $R/runtimes_gpu.json 2>&1 | grep -v '^\[transformers\]' | tail -40
    # OLD: an earlier commit's src/ and bench/ (carried), timed the same way on the same machine, after
    [ -z "${OLD:-}" ] || runtimes_of_tree "$OLD" "${args[@]}" --out $R/runtimes_gpu_before.json 2>&1 \
      | grep -v '^\[transformers\]' | tail -12
    save_results ;;
  pack-results)
    tar czf "$OUT/gates.tar.gz" -C $P gates
    save_results
    tar czf "$OUT/logs.tar.gz" -C $P/runs $(cd $P/runs && ls -d *.log */metrics.jsonl */card.json 2>/dev/null)
    ls -l "$OUT" ;;
  *) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 2 ;;
esac
