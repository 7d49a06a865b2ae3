# Sourced by the GPU recipes (scripts/*_on_gpu.sh). Everything on the GPU machine lives under /root/persist,
# which survives between calls while the machine stays warm. espeak-ng comes from .carry/espeak.tar.xz
# (scripts/train_on_gpu.sh setup unpacks it there).
P=/root/persist
export CTXPRUNE_CACHE=$P/cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ESPEAK_ROOT=$P/espeak/root

remote_env() {
  export PYTHONPATH="/tmp/site:$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$ESPEAK_ROOT/usr/bin:$PATH" ESPEAK_DATA_PATH="$ESPEAK_ROOT/usr/lib/x86_64-linux-gnu/espeak-ng-data"
  export LD_LIBRARY_PATH="$ESPEAK_ROOT/usr/lib/x86_64-linux-gnu:$ESPEAK_ROOT/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

ctxprune() { python3 -m ctxprune.cli "$@"; }
