#!/usr/bin/env bash
# What one short GPU lease runs, most valuable first; every step is bounded by what is left of BUDGET_S, so the
# files of the steps that finished always come back (a lease is 15 minutes of device time, machine start included).
#   1. MT Oryx (the default learner, tau 0.05) for UPDATES updates, 3 seeds side by side per set, the three
#      Jumanji sets as three processes (gpu_population.sh, deadline POP_DEADLINE s), with the last checkpoint
#      in each tarball for `python -m mtmarl.diagnose <run> --seed S` back here (the critic targets).
#   2. The README's main job (`make train`'s command) with a cold XLA cache, timed (target: <= 90 s on one GPU).
#   3. benchmarks/train_step.py at 4 agents, T 20, embed 128, fp32, 1 and 8 seeds in one program.
#
#   bash experiment_scripts/gpu_lease.sh OUT_DIR [BUDGET_S]        # on the GPU machine, repo root, .whl/ carried
#
# OUT_DIR gets at most 8 files (the device tool's limit): monitor.log, <set>.tar.gz x 3, main_job.log,
# main_job.tar.gz, train_step.log, train_step.json.
set -u
out=${1:?OUT_DIR}; budget=${2:-560}
t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
mkdir -p "$out" /tmp/runs
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1

CHECKPOINT=1 INSTALL=0 bash experiment_scripts/gpu_population.sh "$out" "${POP_DEADLINE:-360}"
echo "[$(( $(date +%s) - t0 ))s] population runs done; $(left) s left" | tee -a "$out/monitor.log"

if [ "$(left)" -gt 60 ]; then
  timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -v)
  s=$(date +%s)
  MTMARL_XLA_CACHE=/tmp/cold_xla_cache timeout "$(( $(left) - 10 ))" "${timer[@]}" \
    python3 -m mtmarl.train +algo=mt_oryx +tasks=rware_15 logger.neptune=false hydra.run.dir=/tmp/runs/main_job \
    >"$out/main_job.log" 2>&1
  rc=$?
  echo "main job: rc $rc, wall $(( $(date +%s) - s )) s (cold XLA cache, MPS on)" | tee -a "$out/main_job.log"
  tar czf "$out/main_job.tar.gz" -C /tmp/runs --exclude=checkpoints main_job
fi

if [ "$(left)" -gt 60 ]; then
  timeout "$(( $(left) - 5 ))" python3 benchmarks/train_step.py --agents 4 --seq-len 20 --embed 128 \
    --dtype float32 --population 1 8 --seconds 4 --out "$out/train_step.json" >"$out/train_step.log" 2>&1
  echo "train_step: rc $?" >>"$out/train_step.log"
fi
echo "[$(( $(date +%s) - t0 ))s] lease script done" | tee -a "$out/monitor.log"
