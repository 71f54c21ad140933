"""``python sweeps/run.py search=NAME trials=N``: an Optuna study whose trials are ordinary runs.

- The study lives in its own RDB storage (``sqlite:///<repo>/optuna.db`` by default, ``storage=``): never
  MLflow's sqlite file (both keep an ``alembic_version`` table and each refuses the other's schema).
- Each trial is a grid-like point -> signature -> run dir -> MLflow run, launched ``parallel`` at a time
  through the same launcher as the grids; a trial whose config was already run is not trained again.
- Trials are planned and launched through the grids' own path (sweeps/plan.py, sweeps/submit.py: the same
  checks, the same commit label, the same claims, so two searches never train one point twice).
- Pruning: the job reports each intermediate evaluation to the trial (``optuna.json`` in the run dir tells
  it which; sweeps/pruning.py) and stops early when the pruner says so; the run is recorded PRUNED.
- Resumable: rerunning the command continues the study; trials left RUNNING by a dead search are failed
  and their parameters enqueued again.
"""
from __future__ import annotations

import os
import time

import optuna

from fvq.core.config import ConfigError
from fvq.core.errors import SetupError
from fvq.core.rundir import read_json, read_status, write_json
from sweeps import searches
from sweeps.options import REPO, Options
from sweeps.plan import plan_point, prepare_launch, write_run
from sweeps.pruning import objective
from sweeps.scale import resolve
from sweeps.state import classify
from sweeps.submit import Batch, Launching, submits


class SearchFailed(SetupError):
    """Too many trials failed; the message names the first failed run dir."""


def objective_value(run_dir: str, names: tuple[str, ...]) -> tuple[float | None, bool]:
    """(value, pruned) of a finished trial's run dir; value None when no objective metric exists."""
    final = read_json(os.path.join(run_dir, "final.json"))
    pruned = read_status(run_dir).get("state") == "PRUNED"
    return objective(final.get("metrics", {}), names), pruned


def _plan_trial(study, trial, mod, opts: Options, overrides: dict):
    """(trial, Planned) of one asked trial: its point planned like a grid point, evaluated
    ``mod.evals_per_run`` times during training so the pruner has something to judge."""
    label = f"search.{opts.search}"
    point = {**mod.base, **mod.space(trial)}
    try:
        every = max(resolve(point, opts.scale, overrides).optim.steps // (mod.evals_per_run + 1), 1)
        plan = plan_point(point, opts.scale, {"eval.every": every, **overrides}, opts.runs_dir, label,
                          where=f"{label} trial {trial.number}")
    except SetupError:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # not left RUNNING for a rerun
        raise
    plan.grids.append(label)
    trial.set_user_attr("signature", plan.sig)
    return trial, plan


def overview(mod, opts: Options, overrides: dict, storage: str) -> int:
    """``dry=true`` / ``status=true``: the base point as planned and the study's trials; writes nothing."""
    base = plan_point(mod.base, opts.scale, overrides, opts.runs_dir, f"search.{opts.search}",
                      files=opts.launcher == "local")
    name = f"{opts.search}-{opts.scale}"
    print(f"search={opts.search} scale={opts.scale} study {name} in {storage}; wants trials={opts.trials}; "
          f"base point {base.sig} ({base.state})")
    db = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else None
    trials = []
    if db is None or os.path.exists(db):  # loading a study never creates a sqlite file here
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except KeyError:
            pass
    if not trials:
        print("no trials yet")
    for t in trials:
        sig = t.user_attrs.get("signature", "")
        run = classify(os.path.join(opts.runs_dir, sig))[0] if sig else "-"
        value = f"{t.value:.4g}" if t.value is not None else "-"
        print(f"trial {t.number:>3} {t.state.name:<8} value={value:<10} run {sig or '-':<10} ({run}) {t.params}")
    return 0


def _write_trial(plan, parent: str, batch: list, study, storage: str, mod, launch, scale: str) -> None:
    """The run dir of a trial: config and tags as a grid point's, plus ``optuna.json`` for its pruner."""
    trial = next(t for t, p in batch if p.sig == plan.sig)
    write_run(plan, scale, launch, parent)
    write_json(os.path.join(plan.run_dir, "optuna.json"),
               {"storage": storage, "study": study.study_name, "trial_id": trial._trial_id,
                "objective": list(mod.objective)})


def run_search(opts: Options, overrides: dict) -> int:
    mod = searches.load(opts.search)
    scale, trials = opts.scale, opts.trials
    storage = opts.storage or f"sqlite:///{os.path.join(REPO, 'optuna.db')}"
    if "mlflow" in os.path.basename(storage):
        raise ConfigError(f"storage={storage}: Optuna must not share MLflow's sqlite file")
    launch = prepare_launch(opts)
    if opts.dry or opts.status:
        return overview(mod, opts, overrides, storage)
    from sweeps.tracking import ensure_experiment, store_lock

    with store_lock(storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else None):
        study = optuna.create_study(study_name=f"{opts.search}-{scale}", storage=storage, direction="minimize",
                                    load_if_exists=True,
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            sig = t.user_attrs.get("signature")
            if sig and classify(os.path.join(opts.runs_dir, sig))[0] == "active":
                continue  # another search of this study trains it now: it tells the trial itself
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # its search died: asked again
            study.enqueue_trial(t.params)
    # Create the experiment (and, for sqlite, the schema) here, once: parallel jobs that each found an empty
    # database would race on MLflow's alembic migrations and fail.
    ensure_experiment(opts.tracking_uri, opts.experiment)
    with Launching(opts, launch, f"search={opts.search} scale={scale}",
                   {"commit": launch.label, "search": opts.search}) as launching:
        failures: list[str] = []
        done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        while (n_done := len(study.get_trials(deepcopy=False, states=done_states))) < trials:
            batch = [_plan_trial(study, study.ask(), mod, opts, overrides)
                     for _ in range(min(opts.parallel, trials - n_done))]
            plans = [plan for _, plan in batch]
            print(f"[search] {study.study_name}: trials {n_done + 1}-{n_done + len(batch)} of {trials}, "
                  f"{len({p.sig for p in plans if submits(p.state, opts.retry)})} to train", flush=True)
            launching.submit(Batch(
                plans, write=lambda p, parent: _write_trial(p, parent, batch, study, storage, mod, launch, scale)))
            # Slurm jobs, and a trial another search of this study holds (its claim made it skip here), end later
            while any(classify(p.run_dir)[0] == "active" for p in plans):
                time.sleep(10 if opts.launcher == "slurm" else 1)
            for trial, plan in batch:
                value, pruned = objective_value(plan.run_dir, mod.objective)
                if pruned:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                elif value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    failures.append(f"{plan.run_dir} ({classify(plan.run_dir)[1] or 'no final metric'})")
                else:
                    study.tell(trial, value)
            if len(failures) >= max(2, trials // 2):
                # a search that keeps failing would otherwise ask for new trials forever
                raise SearchFailed(f"search stopped after {len(failures)} failed trials; first: {failures[0]}")
    best = study.best_trial
    print(f"best of {len(study.trials)} trials: {best.value:.4g} with {best.params} "
          f"(run {best.user_attrs.get('signature')})")
    return 0
