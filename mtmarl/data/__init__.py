"""Offline data: per-task Flashbax vaults (og-marl layout), validation, task-balanced batching."""
