#!/usr/bin/env bash
# The two LBF targets at once (test return >= 0.85 and Spearman(Q, MC) >= 0.6 on the training tasks), mapped
# over learner variants and budgets on one GPU. On the CPU the 50-step TD(lambda 0.95) critic with policy temperature
# 0.05 met the return at 6000 updates (0.868, Spearman 0.567) and the critic at 12,000 (0.667, return 0.783): the two
# peak at different budgets. Each variant here is one chain of 3 seeds in one program (training.population), trained
# to each of STAGES in turn (resumed, so one trajectory per variant), and at each stage evaluated (final parameters,
# 64 episodes per task) and diagnosed (`python -m mtmarl.diagnose --which latest`, every seed). The chains run side
# by side under MPS.
#
#   bash experiment_scripts/gpu_lbf_sweep.sh OUT_DIR [DEADLINE_S]        # on the GPU machine, repo root, .whl/ carried
#
# A stage starts only with STAGE_MIN_S (70) seconds left before the deadline (default 330 s after the start);
# results come back whatever stage each chain reached.
# Env: STAGES ("6000 8000 10000"), SEEDS (3), PY (python3), INSTALL (1: install .whl/ into /tmp/site first),
# VARIANTS (names from the table below, default all), UPC (updates per compiled call, 500).
# OUT_DIR gets lbf_sweep.jsonl (one line per variant, stage: per-seed test / train return, Spearman, weight std),
# lbf_sweep.log, and per variant <variant>.tar.gz (<variant>/u<updates>/lbf_5/{config.yaml,metrics.jsonl,
# seed_<s>/*.json}, the layout experiment_scripts/population_table.py reads, and logs/: the run's logs), rewritten
# after each stage: written once at the end, they are lost when the call's time limit, shorter than the script's
# deadline, kills the script first.
set -u
out=${1:?OUT_DIR}; deadline=${2:-330}
py=${PY:-python3}; stages=${STAGES:-"6000 8000 10000"}; seeds=${SEEDS:-3}
t0=$(date +%s)
mkdir -p "$out" /tmp/runs /tmp/lbf_sweep/logs
log() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/lbf_sweep.log"; }
if [ "${INSTALL:-1}" = 1 ]; then
  $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
# Several processes at once (trainers and diagnoses): each takes GPU memory as it needs it.
export PYTHONUNBUFFERED=1 MTMARL_XLA_CACHE=${MTMARL_XLA_CACHE:-/tmp/xla_cache} XLA_PYTHON_CLIENT_PREALLOCATE=false

# name -> overrides (every variant: the 50-step sequences of the CPU runs)
declare -A overrides=(
  [T50_temp0.05]="algo.seq_len=50 algo.td_lambda=0.95 algo.policy_temperature=0.05"
  [T50_temp0.03]="algo.seq_len=50 algo.td_lambda=0.95 algo.policy_temperature=0.03"
  [T50_temp0.05_cos10k]="algo.seq_len=50 algo.td_lambda=0.95 algo.policy_temperature=0.05 algo.lr_decay_updates=10000"
  [T50_lambda1_temp0.05]="algo.seq_len=50 algo.td_lambda=1.0 algo.policy_temperature=0.05"
)
variants=${VARIANTS:-"T50_temp0.05 T50_temp0.03 T50_temp0.05_cos10k T50_lambda1_temp0.05"}
for v in $variants; do [ -n "${overrides[$v]:-}" ] || { echo "unknown variant $v (known: ${!overrides[*]})"; exit 1; }; done

if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>>"$out/lbf_sweep.log"; then
  if timeout 120 $py -c "import jax; jax.devices()" >/dev/null 2>&1; then log "MPS on"
  else echo quit | nvidia-cuda-mps-control; log "MPS off (JAX did not start under it)"; fi
fi

left() { echo $(( deadline - ($(date +%s) - t0) )); }

summarise() {  # one jsonl line for variant $1 at updates $2 from the stage's copied results
  $py - "$1" "$2" "/tmp/lbf_sweep/$1/u$2/lbf_5" "$seeds" <<'EOF'
import json, sys
from pathlib import Path
variant, updates, root, seeds = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
line = {"variant": variant, "updates": updates}
for s in range(seeds):
    d = root / f"seed_{s}"
    try:
        rows = json.loads((d / "summary.json").read_text())
        for split in ("train", "test"):
            vals = [r["normalised_return"] for r in rows if r["split"] == split]
            line.setdefault(split, []).append(round(sum(vals) / len(vals), 4))
        diag = json.loads((d / "diagnostics.json").read_text())["summary"]
        line.setdefault("spearman", []).append(round(diag["spearman"], 4))
        line.setdefault("weight_std", []).append(round(diag["weight_std"], 4))
    except (OSError, KeyError, ValueError) as err:
        line.setdefault("missing", []).append(f"seed {s}: {err}")
print(json.dumps(line))
EOF
}

chain() {  # one variant: train to each stage (resuming), then evaluate and diagnose every seed there
  local v=$1 run=/tmp/runs/lbf_$1 resume=false u s dst
  for u in $stages; do
    if [ "$(left)" -lt "${STAGE_MIN_S:-70}" ]; then log "$v: $(left) s left, stage $u not started"; break; fi
    # shellcheck disable=SC2086  # the overrides are words
    timeout "$(left)" $py -m mtmarl.train +algo=mt_oryx +tasks=lbf_5 training.updates=$u resume=$resume \
      training.eval_every=0 training.population=$seeds eval.episodes=64 training.checkpoint_every=2000 \
      training.updates_per_call=${UPC:-500} training.log_every=${UPC:-500} logger.neptune=false logger.progress=false \
      hydra.run.dir=$run ${overrides[$v]} >>"/tmp/lbf_sweep/logs/$v.log" 2>&1 \
      || { log "$v: training to $u stopped (rc $?)"; break; }
    resume=true
    dst=/tmp/lbf_sweep/$v/u$u/lbf_5
    mkdir -p "$dst"
    cp "$run/config.yaml" "$run/algo.json" "$run/metrics.jsonl" "$dst/"
    for s in $(seq 0 $(( seeds - 1 ))); do
      src=$run/seed_$s; [ -d "$src" ] || src=$run  # one seed (SEEDS=1): its results lie in the run's root
      mkdir -p "$dst/seed_$s"; cp "$src"/{summary,results,run}.json "$dst/seed_$s/"
      timeout "$(left)" $py -m mtmarl.diagnose "$run" --which latest --seed "$s" --out "$dst/seed_$s" \
        >>"/tmp/lbf_sweep/logs/$v.diagnose.log" 2>&1 &
    done
    wait
    summarise "$v" "$u" >>"$out/lbf_sweep.jsonl"
    log "$(tail -1 "$out/lbf_sweep.jsonl")"
    mkdir -p "/tmp/lbf_sweep/$v/logs"; cp /tmp/lbf_sweep/logs/"$v".*log "/tmp/lbf_sweep/$v/logs/"
    tar czf "$out/$v.tar.gz.part" -C /tmp/lbf_sweep "$v" && mv "$out/$v.tar.gz.part" "$out/$v.tar.gz"
  done
}

for v in $variants; do chain "$v" & log "started $v (${overrides[$v]})"; done
wait
log "done"
