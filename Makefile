# Every target sets itself up: `make test` / `make train` on a fresh clone need only Python 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Two host devices let pmap use both CPU cores (ignored on GPU/TPU).
export XLA_FLAGS ?= --xla_force_host_platform_device_count=2

.PHONY: install lock lint test test-slow train figures bench clean sweep experiments data demo-data collect

# pyproject.toml states compatible ranges; constraints.txt pins the verified set inside them, so every install
# (and CI) gets the same versions. [dev] adds the test tools and the optional extras (neptune, slurm).
# uv (pinned there too) installs them: it downloads in parallel, about 3x faster than pip on a fresh machine;
# INSTALLER=pip installs with pip alone.
CONSTRAINTS := constraints.txt
INSTALLER ?= uv
install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	@case "$(INSTALLER)" in uv|pip) ;; *) echo "INSTALLER=$(INSTALLER): allowed values are uv and pip"; exit 1;; esac
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -c $(CONSTRAINTS) -e '.[dev]'
else
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
endif
	touch $(STAMP)

# After upgrading packages in .venv (within pyproject.toml's ranges) and passing the tests: pin what is installed.
lock:
	@test -x $(PY) || { echo "no $(VENV): run make install first"; exit 1; }
	{ echo "# The verified set of every package mtmarl[dev] installs (make lock writes it from $(VENV))."; \
	  $(PY) -m pip freeze --exclude-editable; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Two pytest workers (pytest-xdist), one file per worker at a time so module fixtures are shared: compiles
# dominate and are single-threaded, so two processes use both cores.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

test-slow: install
	$(PY) -m pytest -q -m slow -n $(TEST_WORKERS) --dist loadfile

# The main job: MT Oryx on the bundled rware_15 data (mtmarl/configs/training/default.yaml), then zero-shot on the
# held-out tasks (its measured time: benchmarks/README.md).
# Other runs: make train TRAIN_ARGS='+algo=mt_oryx +tasks=connector_10' or '+algo=mt_bc_sable +tasks=lbf_5'.
TRAIN_ARGS ?= +algo=mt_oryx +tasks=rware_15
train: install
	$(PY) -m mtmarl.train $(TRAIN_ARGS)

figures: install
	$(PY) experiment_scripts/plot_task_splits.py --out docs

bench: install
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/train_step.py

# The multi-task Oryx paper's Fig. 5b (model size on rware_15) at the quick budget on this machine; SLURM:
#   make sweep SWEEP_ARGS='paper launcher=slurm jobs=15'   (see README, Experiments)
SWEEP_ARGS ?= quick
sweep: install
	$(PY) experiment_scripts/model_size.py $(SWEEP_ARGS)

# Every experiment of the multi-task Oryx paper at the given budget (runs shared between them are trained once).
EXPERIMENT_ARGS ?= quick
experiments: install
	for e in task_diversity table1 dataset_size model_size ablations; do \
		$(PY) experiment_scripts/$$e.py $(EXPERIMENT_ARGS) || exit 1; done

# Datasets (vault_data/README.md). One device per collector, so results match the recorded ones;
# each task set is its own target (data-<set>, demo-data-<set>), so `make -j2 data` collects two sets at once.
# demo-data: the bundled data (mtmarl/configs/recipe/demo.yaml; tens of minutes of one CPU core per set);
# data: the full-size benchmark data into vault_data_full/ (mtmarl/configs/recipe/full.yaml; times: README, Datasets);
# collect: any collection, e.g. make collect COLLECT_ARGS='+tasks=lbf_5 collect.budget=500000'.
DATA_SETS ?= connector_10 lbf_5 rware_15 smax_marine_hard smax_stalker_zealot smax_m3_easy
# the sets bundled at the demo recipe (the Jumanji sets are bundled at the converged recipe: make converged-<set>)
DEMO_SETS ?= smax_marine_hard smax_stalker_zealot smax_m3_easy
DEMO_ROOT ?= vault_data
FULL_ROOT ?= vault_data_full
COLLECT_ARGS ?= +recipe=demo +tasks=lbf_5
COLLECT_ONE := XLA_FLAGS=--xla_force_host_platform_device_count=1 $(PY) -m mtmarl.collect
demo-data: $(addprefix demo-data-,$(DEMO_SETS))
data: $(addprefix data-,$(DATA_SETS))
demo-data-%: install
	$(COLLECT_ONE) +recipe=demo +tasks=$* collect.root=$(DEMO_ROOT) collect.write_bundled=true collect.progress=false
data-%: install
	$(COLLECT_ONE) +recipe=full +tasks=$* collect.root=$(FULL_ROOT)
# SMAX (the HyGen paper's sets): expert + medium datasets of the training maps, test maps online for a reference only
# (recipe/smax_demo.yaml: 1M steps per training map, 300k per test map; recipe/smax.yaml: each map to a plateau,
# at least 10M steps, 2000 episodes per dataset, into vault_data_smax/; interruptible, the same command resumes).
demo-data-smax_%: install
	$(COLLECT_ONE) +recipe=smax_demo +tasks=smax_$* split=train collect.root=$(DEMO_ROOT) collect.write_bundled=true collect.progress=false
	$(COLLECT_ONE) +recipe=smax_demo +tasks=smax_$* split=test collect.env_budget.smax=300000 \
		collect.root=$(DEMO_ROOT) collect.write_bundled=true collect.progress=false
data-smax_%: install
	$(COLLECT_ONE) +recipe=smax +tasks=smax_$*

# converged-<set>: every task trained to a plateau (mtmarl/configs/recipe/converged.yaml) into $(CONVERGED_ROOT);
# interruptible: the same command resumes at the first unfinished task (README, Datasets).
# Several collectors share a set: make converged-<set> CONVERGED_ARGS='collect.shard=[i,n]' for i < n.
CONVERGED_ROOT ?= vault_data_converged
CONVERGED_ARGS ?=
converged-%: install
	$(PY) -m mtmarl.collect +recipe=converged +tasks=$* collect.root=$(CONVERGED_ROOT) collect.progress=false \
		$(CONVERGED_ARGS)

collect: install
	$(PY) -m mtmarl.collect $(COLLECT_ARGS)

clean:
	rm -rf $(VENV) outputs
