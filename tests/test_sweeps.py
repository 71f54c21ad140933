"""sweeps/run.py: bad input exits 2 with nothing submitted; dry/status; relaunch rules; local launches."""
import os
import subprocess
import sys

import pytest

from fvq.core.rundir import write_json
from sweeps import grids
from sweeps.state import classify
from sweeps.scale import resolve

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny runs: enough steps to exercise every stage, seconds each.
TINY = ["optim.steps=6", "log.every=3", "log.ckpt_every=3", "data.train_size=64", "data.val_size=8",
        "eval.images=8", "eval.batch=8", "optim.batch=8", "eval.fid=false", "log.progress=off"]


def run(tmp_path, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": REPO}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(p, "sbatch")))
    return subprocess.run([sys.executable, os.path.join(REPO, "sweeps", "run.py"), f"runs_dir={tmp_path / 'runs'}",
                           f"tracking_uri=sqlite:///{tmp_path}/mlflow.db", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tmp_path)


def submitted(tmp_path) -> list[str]:
    root = tmp_path / "runs"
    return [d for d in os.listdir(root) if (root / d / "job.json").exists()] if root.exists() else []


@pytest.mark.parametrize("args, words", [
    (["grid=nope"], "unknown grid 'nope' (valid grids: annealing, bridge, channel,"),
    (["grid=depth,nope"], "unknown grid 'nope' (valid grids: annealing, bridge, channel,"),
    (["grid=depth", "order=random"], "order='random' is not one of longest, shortest"),
    (["grid=depth", "quant.grop=3"], "unknown key 'quant.grop' (did you mean quant.group"),
    (["grid=depth", "paralel=3"], "unknown key 'paralel' (did you mean parallel"),
    (["grid=depth", "parallel=0"], "parallel=0: must be >= 1"),
    (["grid=depth", "dry=maybe"], "dry='maybe': expected bool"),
    (["search=vqbridge_lr", "trials=abc"], "trials='abc': expected int"),
    (["grid=depth", "quant.depth=two"], "quant.depth='two': expected int"),
    (["grid=patch_size", "quant.codebook_size=1000"], "grid patch_size point 2"),
    (["grid=depth", "launcher=slurm", "slurm=/nonexistent.yaml"], "nonexistent"),
    (["grid=depth", "tracking_uri=http://127.0.0.1:9"], "no MLflow tracking server reachable"),
    (["grid=depth", "scale=huge"], "scale='huge' is not one of cpu, paper"),
    (["depth"], "is not key=value"),
    (["search=nope"], "unknown search 'nope'"),
    (["grid=depth", "status=true", "watch=soon"], "watch='soon': expected int"),
    (["grid=depth", "eval.protocol=adm"], "eval.protocol='adm' is not one of fvq, llamagen, official"),
    (["grid=depth", "eval.extra=coco:/nonexistent/coco"], "eval.extra=coco:/nonexistent/coco: /nonexistent/coco "
                                                          "does not exist"),
    (["grid=depth", "optim.accum=3"], "optim.accum=3 must be >= 1 and divide optim.batch=16"),
    (["grid=depth", "launcher=slurm", "slurm=a100x16", "optim.batch=24"], "slurm=a100x16: 16 GPUs (ranks) do not "
                                                                          "divide optim.batch=24"),
    (["grid=depth", "scale=paper", "launcher=slurm", "optim.accum=16", "dry=true"],
     "optim.accum=16 does not divide the 8 images per GPU of optim.batch=128 on slurm=a100x16 (16 GPUs)"),
    (["grid=depth", "seeds=0"], "seeds=0: the number of seeds must be >= 1"),
    (["grid=depth", "seeds=abc"], "seeds='abc': expected a count"),
    (["grid=depth", "seeds=3", "seed=1"], "seed given twice"),
    (["claims=12x"], "claims=12x: unknown claim '12x' (claims: undecided or T16k"),
    (["claims=undecided", "budget=abc"], "budget='abc': expected float"),
    (["claims=undecided", "budget=-1"], "budget=-1: CPU-hours must be a number >= 0"),
    (["claims=undecided", "quant.depth=3"], "claims= adds seeds to the committed cpu-scale points"),
    (["claims=undecided", "grid=depth"], "give exactly one of grid=NAME, search=NAME or claims="),
])
def test_bad_input_exit_2_nothing_submitted(tmp_path, args, words):
    r = run(tmp_path, *args)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert submitted(tmp_path) == []


def test_dry_lists_points_and_submits_nothing(tmp_path):
    r = run(tmp_path, "grid=patch_size", "dry=true")
    assert r.returncode == 0, r.stderr
    assert "(6 points)" in r.stdout and r.stdout.count("missing") == 6
    assert submitted(tmp_path) == [] and not (tmp_path / "mlflow.db").exists()


def test_claims_plan_adds_only_the_missing_seeds_with_their_cost(tmp_path):
    """The results decide: each undecided claim's seeds and CPU-hours; a budget keeps the cheapest. Read from
    the fixture results (the committed ones change with every seeded launch)."""
    fixture = os.path.join(REPO, "tests", "fixtures", "results")
    capped = run(tmp_path, "claims=13b,12b", "budget=0.25", "dry=true", f"results={fixture}")
    assert capped.returncode == 0, capped.stderr
    assert "claim 12b: n 1 -> 3 paired seeds: 4 new runs, 0.23 CPU-h" in capped.stdout, capped.stdout
    assert "claim 13b: n 0 -> 3: 5 runs, 0.28 CPU-h: over the budget" in capped.stdout
    assert submitted(tmp_path) == []
    total = float(capped.stdout.split("claims=13b,12b: ")[1].split(" runs, ")[1].split(" CPU-h")[0])
    assert 0 < total <= 0.25
    seedless = tmp_path / "results"
    seedless.mkdir()
    (seedless / "depth.csv").write_text("grid,signature,paper_signature,psnr\ndepth,a,b,1.0\n")
    bad = run(tmp_path, "claims=undecided", f"results={seedless}", "dry=true")
    assert bad.returncode == 2 and "depth.csv: no seed column" in bad.stderr and bad.stderr.count("\n") == 1


def test_paper_dry_run_prints_the_cost_on_the_official_layout(tmp_path):
    r = run(tmp_path, "grid=projector", "scale=paper", "launcher=slurm", "dry=true")
    assert r.returncode == 0, r.stderr
    assert "estimate on slurm=a100x16: 2 x 8 a100 = 16 GPUs per run, 8 images per GPU per forward" in r.stdout
    assert r.stdout.count("400,364") == 8 and "GPU-hours" in r.stdout and "total (whole grid, 8 runs):" in r.stdout
    assert "FLOPs:" in r.stdout or "measured on" in r.stdout  # which source the speed came from
    assert "note: a launch would stop here: eval.extra=coco:" in r.stdout or os.path.isdir("/datasets/coco/val2017")
    one = run(tmp_path, "grid=depth", "scale=paper", "launcher=slurm", "slurm=a100x1", "optim.steps=2000000",
              "dry=true")
    assert one.returncode == 0 and "warning: " in one.stdout and "max_requeues=20" in one.stdout
    assert submitted(tmp_path) == [] and not (tmp_path / "mlflow.db").exists()


def test_empty_coco_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "coco").mkdir()
    r = run(tmp_path, "grid=depth", f"eval.extra=coco:{tmp_path / 'coco'}")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "holds no .jpg/.jpeg/.png images" in r.stderr and submitted(tmp_path) == []


def test_several_grids_in_one_launch_share_points(tmp_path):
    r = run(tmp_path, "grid=depth,annealing", "dry=true")
    assert r.returncode == 0, r.stderr
    assert "(4 points)" in r.stdout  # 3 + 2, the reference point once
    every = run(tmp_path, "grid=all", "dry=true")
    from sweeps.plan import plan_grids

    expected = {p.sig for p in plan_grids("all", "cpu", {}, str(tmp_path / "runs"))}
    assert every.returncode == 0 and f"({len(expected)} points)" in every.stdout
    ref = [p for p in plan_grids("depth,annealing", "cpu", {}, str(tmp_path / "runs"))
           if not p.overrides.get("quant.depth")
           and not p.overrides.get("sched.kind")]
    assert len(ref) == 1 and ref[0].grids == ["depth", "annealing"]


def test_status_snapshot_shows_progress_of_each_point(tmp_path):
    r = run(tmp_path, "grid=depth", "status=true", "watch=0", *TINY)
    assert r.returncode == 0, r.stderr
    assert "(3 points: 3 missing)" in r.stdout and r.stdout.count("0/6") == 3, r.stdout


def test_relaunch_rules(tmp_path):
    root = tmp_path / "runs"
    states = {}
    for i, (state, extra) in enumerate([("FINISHED", {}), ("FAILED", {"reason": "boom"}),
                                        ("RUNNING", {"pid": 999999}), (None, {})]):
        d = root / f"r{i}"
        d.mkdir(parents=True)
        if state:
            write_json(str(d / "status.json"), {"state": state, "step": 3, **extra})
        states[i] = classify(str(d))[0]
    assert states == {0: "finished", 1: "failed", 2: "stalled", 3: "missing"}
    d = root / "pruned"
    d.mkdir()
    write_json(str(d / "status.json"), {"state": "PRUNED", "step": 2})
    assert classify(str(d))[0] == "pruned"  # stopped by its pruner: skipped like a finished run
    d = root / "live"
    d.mkdir()
    write_json(str(d / "status.json"), {"state": "RUNNING", "step": 1, "pid": os.getpid()})
    assert classify(str(d))[0] == "active"


@pytest.mark.slow
def test_local_grid_launch_then_relaunch_submits_nothing(tmp_path):
    r = run(tmp_path, "grid=annealing", *TINY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 points, 2 to submit" in r.stdout and "done: 2 finished, 0 failed" in r.stdout
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("fvq")
    runs = client.search_runs([exp.experiment_id], "tags.`grid.annealing` = '1'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.tags["signature"] and r.data.tags["commit"] for r in runs)
    # what a person sees in the UI: a model-training experiment, runs named by grid and point in paper
    # terms, nested under one parent run per launch
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert {r.info.run_name for r in runs} == {"annealing vqbridge", "annealing vqbridge constant"}
    parents = client.search_runs([exp.experiment_id], "tags.launch = '1'")
    assert [p.info.run_name for p in parents] == ["grid=annealing scale=cpu"]
    assert parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    again = run(tmp_path, "grid=annealing", *TINY)
    assert again.returncode == 0 and "2 points, 0 to submit (2 finished)" in again.stdout
    # The reference run is shared with grid=schedule: launching it trains only the two new points,
    # and tags the shared run with both grids.
    sched = run(tmp_path, "grid=schedule", *TINY)
    assert "3 points, 2 to submit (1 finished)" in sched.stdout, sched.stdout + sched.stderr
    shared = client.search_runs([exp.experiment_id], "tags.`grid.schedule` = '1' and tags.`grid.annealing` = '1'")
    assert len(shared) == 1


@pytest.mark.slow
def test_failed_run_skipped_unless_retry(tmp_path):
    bad = ["optim.base_lr=1e30", "optim.grad_clip=0", "sched.kind=constant"]
    r = run(tmp_path, "grid=depth", *TINY, *bad[:2], "quant.depth=1")  # all points -> depth 1 -> one run
    assert r.returncode == 1 and "1 failed" in r.stdout, r.stdout + r.stderr
    again = run(tmp_path, "grid=depth", *TINY, *bad[:2], "quant.depth=1")
    assert "0 to submit (1 failed)" in again.stdout
    retry = run(tmp_path, "grid=depth", *TINY, *bad[:2], "quant.depth=1", "retry=true")
    assert "1 to submit" in retry.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", grids.names())
def test_smoke_one_point_of_every_grid(tmp_path, name):
    """CPU smoke run of the first point of each grid (at cpu scale, a few steps)."""
    from fvq.train import train

    point = next(iter(grids.load(name).points()))
    cfg = resolve(point, "cpu", dict(x.split("=") for x in TINY))
    out = train(cfg, str(tmp_path / "run"), log=lambda *a, **k: None)
    assert 0 < out["metrics"]["usage"] <= 1


@pytest.mark.skipif(__import__("fvq.eval.inception").eval.inception.find_fid_weights()[0] is None,
                    reason="no FID Inception weights (run `make weights`)")
def test_local_launch_extracts_the_rfid_reference_once(tmp_path, monkeypatch):
    """Points sharing a val set share one reference; it is extracted before the runs start, then read."""
    from sweeps.launcher import warm_fid_references
    from sweeps.plan import Planned

    monkeypatch.setenv("HOME", str(tmp_path))  # the default cache, ~/.cache/fvq/fid, under this test
    small = {"data.val_size": 8, "eval.images": 8, "eval.fid_images": 4}
    cfgs = [resolve({**small, "quant.group": g}, "cpu") for g in (1, 4)] + \
        [resolve({**small, "eval.fid": False}, "cpu")]
    plans = [Planned(str(i), str(tmp_path / str(i)), {}, "missing", cfg=c) for i, c in enumerate(cfgs)]
    lines = []
    warm_fid_references(plans, 1, log=lambda m, **_: lines.append(m))
    assert len(lines) == 1 and "for 4 images computed" in lines[0]
    warm_fid_references(plans, 1, log=lambda m, **_: lines.append(m))
    assert len(lines) == 2 and "already cached" in lines[1]
    assert len(list((tmp_path / ".cache" / "fvq" / "fid").glob("ref_*.npz"))) == 1


def test_the_progress_line_gives_the_time_left_at_the_pace_measured_between_step_changes(tmp_path, monkeypatch,
                                                                                          capsys):
    from types import SimpleNamespace

    import sweeps.submit as submit
    from fvq.core.rundir import write_status

    clock = iter([0.0, 30.0, 60.0, 90.0, 150.0, 200.0, 210.0])  # one reading per show()
    monkeypatch.setattr(submit.time, "monotonic", lambda: next(clock))
    run = SimpleNamespace(run_dir=str(tmp_path), cfg=SimpleNamespace(steps=6000))
    live, lines = submit.Live(), []

    def show(step, **extra):
        write_status(str(tmp_path), "RUNNING", step=step, **extra)
        live.show({}, {"abc": (run, None)}, [])
        lines.append(capsys.readouterr().out.strip())

    show(850)   # t=0: seen mid-window, no pace yet
    show(1000)  # t=30: first change, the pace's anchor
    show(1000)  # t=60: no change, no new line
    show(1100)  # t=90: 100 steps in 60 s -> 4,900 steps left = 49 min
    show(1200)  # t=150: 200 steps in 120 s -> 48 min
    show(500)   # t=200: resumed from an earlier checkpoint: measured afresh
    show(6000, phase="gFID")  # t=210: training over
    assert lines == ["[sweep] 0 done, 1 running (abc:850/6000), 0 queued",
                     "[sweep] 0 done, 1 running (abc:1000/6000), 0 queued", "",
                     "[sweep] 0 done, 1 running (abc:1100/6000 ~49m), 0 queued",
                     "[sweep] 0 done, 1 running (abc:1200/6000 ~48m), 0 queued",
                     "[sweep] 0 done, 1 running (abc:500/6000), 0 queued",
                     "[sweep] 0 done, 1 running (abc:6000/6000 gFID), 0 queued"]
    assert [submit.clock(s) for s in (40, 720, 5640)] == ["40s", "12m", "1h34m"]
    tok = SimpleNamespace(optim=SimpleNamespace(steps=800))  # a tokenizer's config
    assert submit.total_steps(tok) == 800 and submit.total_steps(None) is None
