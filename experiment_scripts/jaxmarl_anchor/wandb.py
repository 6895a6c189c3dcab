"""Stands in for ``wandb`` when JaxMARL's baseline runs as an anchor: ``log`` appends each call's scalar
metrics as one JSON line to ``$JAXMARL_ANCHOR_LOG``; everything else does nothing. Only on the anchor's path."""

import json
import os


def init(*args, **kwargs):
    return None


def finish(*args, **kwargs):
    return None


def log(metrics, *args, **kwargs):
    row = {}
    for key, value in metrics.items():
        try:
            row[key] = float(value)
        except (TypeError, ValueError):
            continue
    with open(os.environ["JAXMARL_ANCHOR_LOG"], "a") as f:
        f.write(json.dumps(row) + "\n")
