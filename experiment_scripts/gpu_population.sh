#!/usr/bin/env bash
# MT Oryx on every Jumanji set at a long budget on one GPU, 3 seeds per set trained side by side in one
# program (training.population=3), the three sets as three processes sharing the GPU. Built for a lease
# of minutes: every run stops by a deadline, so results always come back.
#
#   bash experiment_scripts/gpu_population.sh OUT_DIR [DEADLINE_S]      # on the GPU machine, repo root
#
# Each seed keeps its own best update by its training-task return, evaluated every EVAL_EVERY updates (5000;
# 0: final parameters), as one-seed runs select theirs.
# Env: ALGO (mt_oryx), UPDATES (100000), SETS ("lbf_5 connector_10 rware_15"), SEEDS (3), EXTRA (more overrides),
# PY (python3), INSTALL (1: install .whl/ into /tmp/site first, see ../shared/gpu/README.md),
# CHECKPOINT (0; 1: the tarball keeps the last and the best checkpoint, all seeds in each, for
# `python -m mtmarl.diagnose <run> --seed S [--which latest]` back here), NAME (suffix of each run's name, so
# two variants of one set can run at once: <set><NAME>).
# A run not done DEADLINE_S seconds after this script started (default 420) gets SIGTERM: the trainer
# checkpoints the updates it has, and the run is then resumed with training.updates set to them, which
# goes straight to the final evaluation of every seed. Each run's log states the updates it reached.
# OUT_DIR gets, per set, <set>.tar.gz (run dir without checkpoints unless CHECKPOINT=1: config, metrics.jsonl,
# seed_<s>/ results) and a monitor log.
set -u
out=${1:?OUT_DIR}; deadline=${2:-420}
algo=${ALGO:-mt_oryx}; name=${NAME:-}; updates=${UPDATES:-100000}; sets=${SETS:-"lbf_5 connector_10 rware_15"}; seeds=${SEEDS:-3}; py=${PY:-python3}
t0=$(date +%s)
mkdir -p "$out" /tmp/runs
log() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/monitor.log"; }
if [ "${INSTALL:-1}" = 1 ]; then
  $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 MTMARL_XLA_CACHE=${MTMARL_XLA_CACHE:-/tmp/xla_cache}
n=$(echo $sets | wc -w)
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-$(awk "BEGIN{print 0.9/$n}")}
command -v nvidia-smi >/dev/null && nvidia-smi -L | tee -a "$out/monitor.log"
# MPS lets the processes' small kernels run at once instead of taking turns; kept only if JAX still starts.
if command -v nvidia-cuda-mps-control >/dev/null &&
   { nvidia-cuda-mps-control -d 2>>"$out/monitor.log" || pgrep -f nvidia-cuda-mps-control >/dev/null; }; then
  if timeout 120 $py -c "import jax; print(jax.devices())" >>"$out/monitor.log" 2>&1; then log "MPS on"
  else echo quit | nvidia-cuda-mps-control; log "MPS off (JAX did not start under it)"; fi
else log "MPS not available"; fi
$py -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$out/monitor.log"

args() {  # the run's overrides (all but training.updates)
  echo "+algo=$algo +tasks=$1 logger.neptune=false logger.progress=false training.updates_per_call=500" \
       "training.log_every=1000 training.eval_every=${EVAL_EVERY:-5000} training.eval_splits=[train]" \
       "training.eval_episodes=32 training.checkpoint_every=10000" \
       "training.population=$seeds eval.episodes=64 hydra.run.dir=/tmp/runs/$1$name ${EXTRA:-}"
}
declare -A pid
for s in $sets; do
  setsid $py -m mtmarl.train $(args $s) training.updates=$updates >"/tmp/runs/$s$name.log" 2>&1 &
  pid[$s]=$!
  log "started $s$name (pid ${pid[$s]})"
done
reached() { $py - "$1" <<'EOF'
import json, sys
steps = [json.loads(l).get("step", 0) for l in open(f"/tmp/runs/{sys.argv[1]}/metrics.jsonl") if l.strip()]
print(max(steps) if steps else 0)
EOF
}
while :; do
  alive=0
  for s in $sets; do kill -0 ${pid[$s]} 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  now=$(( $(date +%s) - t0 ))
  msg=""
  for s in $sets; do msg="$msg $s$name:$(reached $s$name 2>/dev/null || echo 0)"; done
  log "updates$msg"
  if [ $now -ge $deadline ]; then
    for s in $sets; do kill -0 ${pid[$s]} 2>/dev/null && { kill -TERM ${pid[$s]}; log "deadline: SIGTERM $s$name"; }; done
    for s in $sets; do wait ${pid[$s]} 2>/dev/null; done
    break
  fi
  sleep 15
done
for s in $sets; do  # a run stopped at the deadline: evaluate what it reached
  r=$s$name
  if [ ! -f /tmp/runs/$r/seed_0/results.json ] && grep -q "checkpoint saved" /tmp/runs/$r.log; then
    done_=$(sed -n 's/^interrupted at update \([0-9]*\) of.*/\1/p' /tmp/runs/$r.log | tail -1)
    log "$r stopped at $done_ of $updates updates: final evaluation of that"
    $py -m mtmarl.train $(args $s) training.updates=$done_ resume=true >>"/tmp/runs/$r.log" 2>&1 &
    pid[$s]=$!
  fi
done
wait
for s in $sets; do
  r=$s$name
  log "$r: $(grep -c . /tmp/runs/$r/metrics.jsonl 2>/dev/null) metric records; $(tail -1 /tmp/runs/$r.log)"
  cp /tmp/runs/$r.log /tmp/runs/$r/train.log 2>/dev/null
  keep=()  # only the newest step of checkpoints/latest (and the best one), if asked for
  if [ "${CHECKPOINT:-0}" = 1 ] && [ -d /tmp/runs/$r/checkpoints/latest ]; then
    last=$(ls /tmp/runs/$r/checkpoints/latest | grep -E '^[0-9]+$' | sort -n | tail -1)
    for old in $(ls /tmp/runs/$r/checkpoints/latest | grep -E '^[0-9]+$' | grep -vx "$last"); do
      keep+=(--exclude="$r/checkpoints/latest/$old"); done
  else
    keep+=(--exclude=checkpoints)
  fi
  tar czf "$out/$r.tar.gz" -C /tmp/runs "${keep[@]}" "$r"
done
log "done"
