"""``python sweeps/run.py search=NAME trials=N``: an Optuna study whose trials are ordinary runs.

- The study lives in its own RDB storage (``sqlite:///<repo>/optuna.db`` by default, ``storage=``): never
  MLflow's sqlite file (both keep an ``alembic_version`` table and each refuses the other's schema).
- Each trial is a grid-like point -> signature -> run dir -> MLflow run, launched ``parallel`` at a time
  through the same launcher as the grids; a trial whose config was already run is not trained again.
- Pruning: the job reports each intermediate evaluation to the trial (``optuna.json`` in the run dir tells
  it which) and stops early when the pruner says so.
- Resumable: rerunning the command continues the study; trials left RUNNING by a dead search are failed
  and their parameters enqueued again.
"""
from __future__ import annotations

import json
import os
import time

import optuna

from fvq.config import ConfigError
from sweeps import searches
from sweeps.identity import check_stored, science_delta, signature
from sweeps.launcher import REPO, Planned, classify, git_commit, launch_local, launch_slurm, refuse_dirty
from sweeps.scale import resolve


def objective_value(run_dir: str, names: tuple[str, ...]) -> tuple[float | None, bool]:
    """(value, pruned) from a run's final.json; value None when no objective metric exists."""
    try:
        with open(os.path.join(run_dir, "final.json")) as f:
            final = json.load(f)
    except FileNotFoundError:
        return None, False
    metrics = final.get("metrics", {})
    value = next((float(metrics[n]) for n in names if metrics.get(n) is not None), None)
    return value, bool(final.get("pruned"))


def pruning_callback(run_dir: str):
    """Called inside the job: report intermediate evaluations to the trial; True = prune."""
    path = os.path.join(run_dir, "optuna.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        info = json.load(f)
    study = optuna.load_study(study_name=info["study"], storage=info["storage"])
    trial = optuna.trial.Trial(study, info["trial_id"])
    names = tuple(info["objective"])

    def report(step: int, metrics: dict[str, float]) -> bool:
        value = next((metrics[n] for n in names if metrics.get(n) is not None), None)
        if value is None:
            return False
        trial.report(float(value), step)
        return trial.should_prune()

    return report


def run_search(opts: dict, overrides: dict) -> int:
    from sweeps.run import write_run  # the same run-dir writer as grids

    mod = searches.load(opts["search"])
    scale, runs_root = opts["scale"], os.path.abspath(opts["runs_dir"])
    storage = opts.get("storage") or f"sqlite:///{os.path.join(REPO, 'optuna.db')}"
    if "mlflow" in os.path.basename(storage):
        raise ConfigError(f"storage={storage}: Optuna must not share MLflow's sqlite file")
    trials = int(opts["trials"])
    commit, dirty = git_commit()
    spec = None
    if opts["launcher"] == "slurm":
        from slurm.spec import load_spec

        spec = load_spec(opts["slurm"])
        refuse_dirty(dirty, opts["force"])
    from sweeps.tracking import check_reachable, ensure_experiment

    check_reachable(opts["tracking_uri"])
    study = optuna.create_study(study_name=f"{opts['search']}-{scale}", storage=storage, direction="minimize",
                                load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params)
    # Create the experiment (and, for sqlite, the schema) here, once: parallel jobs that each found an empty
    # database would race on MLflow's alembic migrations and fail.
    ensure_experiment(opts["tracking_uri"], opts["experiment"])
    failures: list[str] = []
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    while (n_done := len(study.get_trials(deepcopy=False, states=done_states))) < trials:
        batch, plans = [], []
        for _ in range(min(int(opts["parallel"]), trials - n_done)):
            trial = study.ask()
            point = {**mod.base, **mod.space(trial)}
            base_cfg = resolve(point, scale, overrides)
            every = max(base_cfg.optim.steps // (mod.evals_per_run + 1), 1)
            cfg = resolve(point, scale, {"eval.every": every, **overrides})
            sig = signature(cfg)
            run_dir = os.path.join(runs_root, sig)
            check_stored(cfg, run_dir)
            state, detail = classify(run_dir)
            plan = Planned(sig, run_dir, science_delta(cfg), state, detail, cfg)
            trial.set_user_attr("signature", sig)
            batch.append((trial, plan))
            if state in ("missing", "stalled") and all(p.sig != sig for p in plans):
                write_run(plan, f"search.{opts['search']}", scale, commit)
                with open(os.path.join(run_dir, "optuna.json"), "w") as f:
                    json.dump({"storage": storage, "study": study.study_name, "trial_id": trial._trial_id,
                               "objective": list(mod.objective)}, f)
                plans.append(plan)
        print(f"[search] {study.study_name}: trials {n_done + 1}-{n_done + len(batch)} of {trials}, "
              f"{len(plans)} to train", flush=True)
        if plans and opts["launcher"] == "slurm":
            launch_slurm(plans, runs_root, opts["tracking_uri"], opts["experiment"], spec, commit)
            while any(classify(p.run_dir)[0] == "active" for p in plans):
                time.sleep(10)
        elif plans:
            launch_local(plans, runs_root, opts["tracking_uri"], opts["experiment"], int(opts["parallel"]))
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
            raise RuntimeError(f"search stopped after {len(failures)} failed trials; first: {failures[0]}")
    best = study.best_trial
    print(f"best of {len(study.trials)} trials: {best.value:.4g} with {best.params} "
          f"(run {best.user_attrs.get('signature')})")
    return 0
