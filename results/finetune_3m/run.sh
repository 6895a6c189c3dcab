#!/usr/bin/env bash
# Issue 19: JP / TT on SMAX 3m: MAPPO from scratch vs MT BC-Sable and MT Oryx (offline on marine-hard expert data) fine-tuned.
set -u
cd /work/exp2
export XLA_FLAGS=--xla_force_host_platform_device_count=2
PY=.venv/bin/python
RUNS=/work/exp1/results/runs
OUT=results/finetune_3m
mkdir -p $OUT
echo "$(date +%T) mappo"; $PY -m mtmarl.collect task=smax:map=3m collect.record=false collect.budget=409600 collect.root=$OUT/mappo online.tt_threshold=1.8 eval.episodes=64 > $OUT/mappo.log 2>&1; echo "rc=$?"
for a in mt_bc_sable mt_oryx; do
  R=$(ls -d $RUNS/$a-smax_marine_hard-*uidexpert*/seed_0)
  echo "$(date +%T) $a from $R"
  $PY -m mtmarl.collect online=finetune online.init_from=$R task=smax:map=3m collect.record=false collect.budget=30720 collect.root=$OUT/$a online.tt_threshold=1.8 eval.episodes=64 > $OUT/$a.log 2>&1; echo "rc=$?"
done
echo "$(date +%T) done"
