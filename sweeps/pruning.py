"""Optuna pruning inside a trial's job: report each intermediate evaluation, stop when the pruner says so.

A run dir is a search trial when the search wrote ``optuna.json`` there (storage, study, trial id,
objective names); optuna is imported only then, so ordinary grid jobs never load it.
"""
from __future__ import annotations

import os
from typing import Callable

from fvq.core.rundir import read_json


def objective(metrics: dict, names: tuple[str, ...]) -> float | None:
    """The first objective metric present (e.g. rFID, else rec_l2 when rFID is off)."""
    return next((float(metrics[n]) for n in names if metrics.get(n) is not None), None)


def pruning_callback(run_dir: str) -> Callable[[int, dict[str, float]], bool] | None:
    """``on_eval`` for fvq.train.train: report to the trial, True = prune; None when not a trial."""
    info = read_json(os.path.join(run_dir, "optuna.json"))
    if not info:
        return None
    import optuna

    study = optuna.load_study(study_name=info["study"], storage=info["storage"])
    trial = optuna.trial.Trial(study, info["trial_id"])
    names = tuple(info["objective"])

    def report(step: int, metrics: dict[str, float]) -> bool:
        value = objective(metrics, names)
        if value is None:
            return False
        trial.report(value, step)
        return trial.should_prune()

    return report
