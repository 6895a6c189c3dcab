#!/usr/bin/env bash
# One GPU lease for the LBF targets and the main job's time, every step bounded by BUDGET_S:
#   1. MT Oryx on lbf_5 at the paper budget (LBF_UPDATES, 100k), 3 seeds in one program, evaluated on the
#      training tasks every EVAL_EVERY updates (5000) so that each seed keeps its own best update (LBF's return peaks
#      early and then falls with longer training); beside it, under MPS, the same with
#      50-step sequences and TD(lambda 0.95) (T50_UPDATES, 40k: 2.5x the cost per update), the critic variant
#      that ranked LBF's states best in the CPU probe, with the policy softmax at temperature 0.03 (T50_EXTRA; on
#      an H200 at 8000 updates: 0.919 test and Spearman 0.61-0.62, results/gpu_h200_lbf_sweep/). Both tarballs keep the last and the best checkpoint for
#      `python -m mtmarl.diagnose` back here.
#   2. The README's main job with a cold XLA cache, timed, then again with the cache it filled (warm).
#
#   bash experiment_scripts/gpu_lease_select.sh OUT_DIR [BUDGET_S]     # on the GPU machine, repo root, .whl/ carried
#
# SKIP_POP=1 runs step 2 alone, SKIP_MAIN=1 step 1 alone.
# OUT_DIR gets: monitor.log, lbf_5.tar.gz, lbf_5_T50.tar.gz, main_job.log, main_job.tar.gz, main_job_warm.log.
set -u
out=${1:?OUT_DIR}; budget=${2:-560}
t0=$(date +%s)
left() { echo $(( budget - ($(date +%s) - t0) )); }
mkdir -p "$out" /tmp/runs
if [ "${INSTALL:-1}" = 1 ]; then  # INSTALL=0: the packages are importable already (a dry run on a CPU)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.4}
sel="${SEL_EXTRA:-}"  # gpu_population.sh selects each seed's best update (EVAL_EVERY, default 5000)
deadline=${POP_DEADLINE:-380}
if [ "${SKIP_POP:-0}" != 1 ]; then  # SKIP_POP=1: step 2 alone
CHECKPOINT=1 INSTALL=0 SETS=lbf_5 UPDATES=${LBF_UPDATES:-100000} EXTRA="$sel" \
  bash experiment_scripts/gpu_population.sh "$out" "$deadline" &
first=$!
sleep 5  # the first one starts the MPS daemon
CHECKPOINT=1 INSTALL=0 SETS=lbf_5 NAME=_T50 UPDATES=${T50_UPDATES:-40000} \
  EXTRA="$sel algo.td_lambda=0.95 algo.seq_len=50 ${T50_EXTRA-algo.policy_temperature=0.03}" bash experiment_scripts/gpu_population.sh "$out" "$deadline" &
wait $first; wait
fi
echo "[$(( $(date +%s) - t0 ))s] population runs done; $(left) s left" | tee -a "$out/monitor.log"
[ "${SKIP_MAIN:-0}" = 1 ] && exit 0

unset XLA_PYTHON_CLIENT_MEM_FRACTION
timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -v)
for kind in cold warm; do  # warm: the XLA cache the cold run filled
  [ "$(left)" -gt 60 ] || break
  name=main_job; [ $kind = warm ] && name=main_job_warm
  s=$(date +%s)
  MTMARL_XLA_CACHE=/tmp/main_job_xla_cache timeout "$(( $(left) - 10 ))" "${timer[@]}" \
    python3 -m mtmarl.train +algo=mt_oryx +tasks=rware_15 logger.neptune=false hydra.run.dir=/tmp/runs/$name \
    >"$out/$name.log" 2>&1
  echo "main job ($kind XLA cache): rc $?, wall $(( $(date +%s) - s )) s" | tee -a "$out/$name.log" "$out/monitor.log"
  [ $kind = cold ] && tar czf "$out/main_job.tar.gz" -C /tmp/runs --exclude=checkpoints main_job
done
echo "[$(( $(date +%s) - t0 ))s] lease script done" | tee -a "$out/monitor.log"
