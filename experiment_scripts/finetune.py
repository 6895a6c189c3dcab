"""The M3 paper's jump point (JP) and time to threshold (TT): offline-pretrained policies fine-tuned online on
SMAX maps against MAPPO from scratch, over seeds.

    python experiment_scripts/finetune.py --runs m3=<run dir> mt_bc_sable=<run dir> --maps 3m 8m \\
        --seeds 0 1 2 --budget 40960 --scratch mappo=409600 qmix=204800 --out results/finetune_mh_expert

Each ``--runs`` entry is a ``python -m mtmarl.train`` run (a ``training.population`` run holds every seed;
seed ``s`` fine-tunes that run's seed ``s``). Every (learner, seed, map) is one
``python -m mtmarl.finetune online=finetune online.init_from=<run> online.init_seed=<s> task=smax:map=<m>``
(``online=hygen`` for an ``algo=hygen`` run: the HyGen paper's hybrid stage, so HyGen's Fig. 4 comparison with
online QMIX runs from the same driver) into ``<out>/<learner>/seed_<s>/<map>/``; MAPPO from scratch is
``online=mappo`` with the same seed. A run whose reference entry exists is not run again, so a stopped
sweep resumes. ``--scratch SYSTEM=STEPS`` adds online learners from scratch (``online=<system>``: MAPPO,
online QMIX) with the same seeds.

JP is the return of the evaluation before any update (stochastic policy, ``eval.episodes`` episodes). TT
to a threshold is read off the learning curve as the collector reads it (that evaluation, then each
chunk's training return), for every ``--thresholds`` value: the M3 paper's 18 of SMAC's 20 is 1.8 on SMAX's
0-2 scale, which no learner reached in the first measurement, so lower ones are reported beside it.
Writes ``finetune.md`` (mean ± standard error over seeds), ``finetune.json`` (every run) and
``curves.png`` (mean training return against env steps). HyGen's hybrid stage over the set's source tasks
with the final policy evaluated on the whole set (the HyGen paper's Table 1's HyGen column) adds a zero-shot table:

    python experiment_scripts/finetune.py --runs hybrid=<algo=hygen run> --maps 3m --seeds 0 1 2 --budget 20480 \
        --scratch --extra online.sources=train online.eval_set=true --out results/<name>

The code lives in ``mtmarl/experiments/finetune.py``.
"""

from mtmarl.experiments.finetune import run_cli

if __name__ == "__main__":
    run_cli()
