"""Optuna searches (sweeps/search.py): trials are real runs in MLflow, the study resumes, storage is checked."""
import json
import os

import optuna
from mlflow.tracking import MlflowClient

from test_sweeps import TINY, run


def study(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="vqbridge_lr-cpu", storage=f"sqlite:///{tmp_path}/optuna.db")


def test_search_runs_trials_resumes_and_extends(tmp_path):
    args = ["search=vqbridge_lr", f"storage=sqlite:///{tmp_path}/optuna.db", "parallel=2", "experiment=search",
            *[a for a in TINY if not a.startswith("optim.steps")], "optim.steps=8"]
    r = run(tmp_path, *args, "trials=3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "best of 3 trials" in r.stdout
    s = study(tmp_path)
    done = [t for t in s.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(done) == 3
    sigs = {t.user_attrs["signature"] for t in s.trials}
    for sig in sigs:  # every trial is an ordinary run: run dir with final.json and the intermediate evals
        final = json.load(open(tmp_path / "runs" / sig / "final.json"))
        assert "rec_l2" in final["metrics"]
        assert json.load(open(tmp_path / "runs" / sig / "config.json"))["eval.every"] == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("search")
    trials_runs = [x for x in client.search_runs([exp.experiment_id]) if "launch" not in x.data.tags]
    assert {x.data.tags.get("signature") for x in trials_runs} == sigs
    assert all(x.info.run_name.startswith("search.vqbridge_lr ") for x in trials_runs)
    # a completed trial's objective is its run's final metric (rFID off here: the L2 fallback)
    for t in s.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            final = json.load(open(tmp_path / "runs" / t.user_attrs["signature"] / "final.json"))
            assert t.value == final["metrics"]["rec_l2"]

    # rerunning the same command trains nothing; asking for more trials adds exactly that many
    again = run(tmp_path, *args, "trials=3")
    assert again.returncode == 0 and "best of 3 trials" in again.stdout, again.stdout + again.stderr
    more = run(tmp_path, *args, "trials=4")
    assert more.returncode == 0, more.stdout + more.stderr
    assert len([t for t in study(tmp_path).trials if t.state.is_finished()]) == 4
    assert not any(t.state == optuna.trial.TrialState.FAIL for t in study(tmp_path).trials)


def test_search_refuses_mlflow_sqlite_as_storage(tmp_path):
    r = run(tmp_path, "search=vqbridge_lr", f"storage=sqlite:///{tmp_path}/mlflow.db", "trials=1")
    assert r.returncode == 2 and "must not share MLflow's sqlite file" in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists() or os.listdir(tmp_path / "runs") == []


def test_forced_dirty_search_records_the_dirty_label(tmp_path, monkeypatch):
    """A search goes through the grids' launch path: a dirty tree's commit label says so in the run dir."""
    import sweeps.plan
    from sweeps.run import main

    monkeypatch.setattr(sweeps.plan, "git_commit", lambda: ("0123456789abcdef", True))
    args = ["search=vqbridge_lr", f"storage=sqlite:///{tmp_path}/optuna.db", "trials=1", "parallel=1",
            "launcher=local", "force=true", f"runs_dir={tmp_path / 'runs'}",
            f"tracking_uri=sqlite:///{tmp_path}/mlflow.db", *[a for a in TINY if not a.startswith("optim.steps")],
            "optim.steps=4"]
    assert main(args) == 0
    (sig,) = [t.user_attrs["signature"] for t in study(tmp_path).trials]
    tags = json.load(open(tmp_path / "runs" / sig / "tags.json"))
    assert tags["commit"] == "0123456789abcdef+dirty"
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(
        json.load(open(tmp_path / "runs" / sig / "mlflow.json"))["run_id"])
    assert run.data.tags["commit"] == "0123456789abcdef+dirty"
