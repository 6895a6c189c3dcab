"""Experiment matrices over ``mtmarl.train`` (the multi-task Oryx paper's figures and Table 1).

* :mod:`.runner`: resumable (config, seed) matrices, one subprocess per run (or SLURM via Hydra submitit);
* :mod:`.config`: experiment configs in ``mtmarl/configs/experiments/`` (budget presets ``quick``, ``default``,
  ``cpu``, ``gpu``, ``paper``);
* :mod:`.stats`: mean +- standard error, IQM with stratified bootstrap confidence intervals;
* :mod:`.analysis`: per-task records from finished runs, aggregated tables (printed, JSON, CSV, Markdown);
* :mod:`.plots`: matplotlib PNGs with the plotted numbers saved beside them (JSON, CSV);
* :mod:`.driver`: the command line of ``experiment_scripts/<experiment>.py``.
"""
