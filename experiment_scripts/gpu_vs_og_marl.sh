#!/usr/bin/env bash
# og-marl's Oryx step beside ours on one GPU (target: >= 2x at 4 agents), alternated in one run by
# benchmarks/vs_og_marl.py, float32 on both sides (og-marl's only path), one device each.
#
# Set-up here, before the lease (all three folders are git-ignored and travel with `carry`):
#   bash ../shared/gpu/wheels.sh                         # .whl/: our packages the image lacks
#   .whl_og/: og-marl's extra packages (tfp-nightly 0.26.0.dev20261027, decorator, colorama, requests, ...;
#             the list and versions are in benchmarks/README.md, *og-marl beside us on one GPU: set-up*)
#   .ogm/og_marl: og-marl's package at commit f4eb8f0 (`fetch` instadeepai/og-marl, then
#             `git --git-dir=<mirror> archive f4eb8f0 og_marl | tar -x -C .ogm`)
#   .ogm/bench_oryx.py: `cp ../shared/anchors/og_marl_oryx/bench_oryx.py .ogm/` (../shared does not travel to the
#             GPU machine, so the anchor goes with .ogm)
# On the GPU machine, repo root, carry [".whl", ".whl_og", ".ogm"]:
#   bash experiment_scripts/gpu_vs_og_marl.sh OUT_DIR [AGENTS...]      (default: 4)
# OUT_DIR gets vs_og_marl.json and vs_og_marl.log. og-marl's logger imports neptune and pandas, which the image
# lacks; benchmarks/og_marl_shim stands in for them (the timed learner never logs).
set -u
out=${1:?OUT_DIR}; shift
agents=${*:-4}
mkdir -p "$out"
for d in .whl .whl_og .ogm/og_marl .ogm/bench_oryx.py; do [ -e "$d" ] || { echo "missing $d (see the set-up above)"; exit 1; }; done
if [ "${INSTALL:-1}" = 1 ]; then  # INSTALL=0: the packages are importable already (a dry run on a CPU)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ogsite .whl_og/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi -L
timeout "${LIMIT_S:-480}" python3 benchmarks/vs_og_marl.py --ogm .ogm --anchor .ogm/bench_oryx.py --og-python python3 \
  --og-pythonpath "$PWD/benchmarks/og_marl_shim:/tmp/ogsite" --agents $agents --dtype float32 --devices 1 \
  --rounds "${ROUNDS:-2}" --seconds "${SECONDS_PER_RUN:-8}" --og-updates "${OG_UPDATES:-500}" --og-repeats 3 \
  --out "$out/vs_og_marl.json" 2>&1 | tee "$out/vs_og_marl.log"
