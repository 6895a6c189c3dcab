"""Training: compiled learner, evaluation policy adapter, checkpoints and logging."""
