"""Data-parallel training on CPU with gloo: 2 processes give the 1-process run.

- reductions on hand-built sets: usage is the union of the ranks' codes (the official code's per-rank usage
  is the bug this guards against), windowed usage, uneven gathers, a rank-0 failure reaching every rank;
- evaluation sharded over 2 ranks == 1-process evaluation (usage, PSNR, SSIM, an LPIPS stand-in, rFID);
- training: 2 processes under torchrun, and 2 tasks of one job on the real Slurm dev cluster (through
  sweeps/launcher.py and sweeps/job.py, requeued mid-run), == 1 process with the same global batch and seed:
  losses, usage curve, final metrics and weights; a 2-process run killed after a checkpoint and restarted
  resumes to the same result.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from fvq.core import dist
from fvq.core.config import Config, apply_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The cpu-2 model on 32x32 photos, global batch 8: a few seconds per run. 40 steps leave time to requeue.
TINY = ["model.arch=cpu-2", "optim.steps=40", "log.every=4", "log.ckpt_every=4", "data.train_size=64",
        "data.val_size=9", "eval.images=9", "eval.batch=4", "optim.batch=8", "quant.codebook_size=64",
        "eval.fid=false", "log.progress=lines", "threads=1",
        "optim.lr_scale=8"]  # lr 5e-5: float error between layouts stays small over 40 steps (the cpu default
                             # lr 1e-3 at batch 8 amplifies it past the comparison tolerance)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- 2 ranks in this machine, spawned: helpers and evaluation -----------------------------------------
def _rank_main(rank: int, world: int, port: int, fn_name: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with dist.joined(torch.device("cpu")):
        torch.save(globals()[fn_name](rank), os.path.join(out, f"{rank}.pt"))


def spawn(fn_name: str, tmp_path, world: int = 2) -> list:
    mp.spawn(_rank_main, args=(world, free_port(), fn_name, str(tmp_path)), nprocs=world)
    return [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(world)]


def _gloo_threads_after_leaving(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with dist.joined(torch.device("cpu")):
        import torchvision  # noqa: F401 (imports torch._dynamo, as LPIPS and torch-fidelity do)
        dist.broadcast_object(rank)
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    torch.save([n for n in names if "gloo" in n], os.path.join(out, f"{rank}.pt"))


def test_leaving_the_group_joins_its_threads(tmp_path):
    """No gloo thread outlives the group: one running into interpreter shutdown aborted a finished rank."""
    mp.spawn(_gloo_threads_after_leaving, args=(2, free_port(), str(tmp_path)), nprocs=2)
    assert [torch.load(tmp_path / f"{r}.pt") for r in range(2)] == [[], []]


def _reductions(rank: int) -> dict:
    from fvq.eval.metrics import UsageCounter, WindowedUsage

    mine = [torch.tensor([0, 1, 2, 2]), torch.tensor([2, 3, 7])][rank]
    c = UsageCounter(10)
    c.update(mine)
    alone = c.usage
    c.all_reduce()
    w = WindowedUsage(10, window=3)
    for step, codes in ([(1, [0]), (5, [1])], [(4, [0]), (2, [9]), (6, [4])])[rank]:
        w.update(torch.tensor(codes), step)
    w.all_reduce()
    try:
        dist.on_main(_fail_on_main)
        failure = ""
    except ValueError as e:
        failure = str(e)
    return {"alone": alone, "usage": c.usage, "counts": c.counts, "last_seen": w.last_seen,
            "win_usage": w.usage(6), "gathered": dist.all_gather_cat(torch.arange(rank * 10, rank * 10 + 1 + rank)),
            "shard": list(dist.shard(9)), "any": dist.any_true(rank == 1), "failure": failure,
            "mean": dist.mean_terms({"a": torch.tensor(float(rank)), "b": torch.tensor(2.0)})}


def _fail_on_main():
    raise ValueError("run dir refused")


def test_reductions_over_ranks(tmp_path):
    r0, r1 = spawn("_reductions", tmp_path)
    assert r0["alone"] == pytest.approx(0.3)  # what a per-rank report would say (the official code's bug)
    for r in (r0, r1):
        assert r["usage"] == pytest.approx(0.5)  # {0,1,2,3,7}: the union
        assert r["counts"].tolist() == [1, 1, 3, 1, 0, 0, 0, 1, 0, 0]
        assert r["last_seen"][[0, 1, 4, 9]].tolist() == [4, 5, 6, 2]
        assert r["win_usage"] == pytest.approx(0.3)  # codes seen at steps 4..6 on any rank: 0, 1, 4
        assert r["gathered"].tolist() == [0, 10, 11]
        assert r["any"] is True and r["failure"] == "run dir refused"
        assert r["mean"]["a"].item() == pytest.approx(0.5) and r["mean"]["b"].item() == pytest.approx(2.0)
    assert r0["shard"] + r1["shard"] == list(range(9))


def _eval_model():
    from fvq.build import build_datasets, build_model

    cfg = apply_overrides(Config(), TINY)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return model, build_datasets(cfg)[1]


def _lpips_stand_in(x, y):  # per-image values, like LPIPS: checks they are gathered, not averaged per rank
    return (x - y).abs().flatten(1).mean(1)


def _evaluate(rank: int) -> dict:
    from fvq.eval.evaluate import evaluate

    model, val = _eval_model()
    fid = os.path.isfile(os.path.join(REPO, "weights", "default_1.pt"))
    out = os.environ.get("FVQ_TEST_CACHE", "")
    return evaluate(model, val, batch_size=2, fid=fid, lpips_module=_lpips_stand_in, cache_dir=out).metrics


@pytest.mark.slow
def test_sharded_evaluation_equals_one_process(tmp_path, monkeypatch):
    from fvq.eval.evaluate import evaluate

    monkeypatch.setenv("FVQ_TEST_CACHE", str(tmp_path / "fid"))  # real features computed by both ranks
    model, val = _eval_model()
    fid = os.path.isfile(os.path.join(REPO, "weights", "default_1.pt"))
    ref = evaluate(model, val, batch_size=2, fid=fid, lpips_module=_lpips_stand_in,
                   cache_dir=str(tmp_path / "fid1")).metrics
    r0, r1 = spawn("_evaluate", tmp_path)
    assert r0 == r1  # every rank reports the same, reduced numbers
    assert set(r0) == set(ref) and ("rfid" in ref) == fid
    for k in ("usage", "perplexity", "dead_codes", "tokens_per_code", "eval_images"):
        assert r0[k] == ref[k], k
    for k in ("psnr", "ssim", "rec_l2", "lpips") + (("rfid",) if fid else ()):
        assert r0[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-4), k


# ---- end to end: 1 process vs 2 ------------------------------------------------------------------------
def cli(out, *extra, nproc: int = 1, **kw) -> subprocess.Popen:
    launch = [sys.executable, "-m", "fvq.train"] if nproc == 1 else [
        # a fixed master port, not --standalone: its c10d rendezvous aborted rank 1 at exit ("terminate called
        # without an active exception") in 2 of 4 torchrun tests of one fresh-clone run
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
        "--master_port", str(free_port()), "-m", "fvq.train"]
    return subprocess.Popen([*launch, f"out={out}", *TINY, *extra], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def metrics(run_dir, resumed: bool) -> dict:
    rows = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    out = {(r["key"], r["step"]): r["value"] for r in rows}  # a resumed run re-logs steps after its checkpoint
    assert resumed or len(out) == len(rows), "a metric logged twice (by two ranks?)"
    return {k: v for k, v in out.items() if not k[0].startswith(("time/", "train/img_per_s"))}


def assert_same_run(a, b, resumed: bool = False) -> None:
    """Same losses, usage curve, final metrics (float tolerance) and weights as the 1-process run ``a``."""
    ma, mb = metrics(a, False), metrics(b, resumed)
    assert set(ma) == set(mb)
    for k, v in ma.items():
        if "usage" in k[0] or k[0].endswith(("dead_codes", "tokens_per_code", "perplexity")):
            assert mb[k] == pytest.approx(v, rel=1e-9), k  # counts: exact up to float formatting
        else:
            assert mb[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    fa, fb = (json.load(open(os.path.join(d, "final.json"))) for d in (a, b))
    assert fa["metrics"].keys() == fb["metrics"].keys()
    for k, v in fa["metrics"].items():
        assert fb["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    wa, wb = (torch.load(os.path.join(d, "ckpt.pt"), weights_only=True) for d in (a, b))
    assert wa["step"] == wb["step"] and wa["model"].keys() == wb["model"].keys()
    for k in wa["model"]:
        torch.testing.assert_close(wb["model"][k], wa["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    assert torch.equal(wa["window"]["last_seen"], wb["window"]["last_seen"])
    ca, cb = (torch.load(os.path.join(d, "codebook.pt"), weights_only=True)["codebook"] for d in (a, b))
    torch.testing.assert_close(cb, ca, rtol=1e-4, atol=1e-5)
    assert json.load(open(os.path.join(b, "status.json")))["state"] == "FINISHED"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "one"
    p = cli(out)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return str(out)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(one_process, tmp_path):
    t0 = time.monotonic()
    p = cli(tmp_path / "two", nproc=2)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert out.count('"metrics"') == 1  # rank 0 alone prints the result
    assert_same_run(one_process, str(tmp_path / "two"))
    print(f"2-process run {time.monotonic() - t0:.1f}s")


def test_global_batch_not_divisible_is_one_line(tmp_path):
    p = cli(tmp_path / "r", "optim.batch=7", nproc=2)
    _, err = p.communicate(timeout=300)
    assert p.returncode != 0 and "optim.batch=7 (the global batch) is not divisible by 2 processes" in err


def step_of(run_dir) -> int:
    try:
        return json.load(open(os.path.join(run_dir, "status.json"))).get("step") or 0
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_two_processes_killed_after_checkpoint_resume(one_process, tmp_path):
    run = tmp_path / "cut"
    victim = cli(run, nproc=2, start_new_session=True)
    deadline = time.time() + 240
    while step_of(run) < 12 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, victim.communicate()[1]
    os.killpg(victim.pid, signal.SIGKILL)  # torchrun and both ranks, no chance to checkpoint
    victim.communicate()
    assert torch.load(run / "ckpt.pt", weights_only=True)["step"] >= 8
    again = cli(run, nproc=2)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resumed" in out + err
    assert_same_run(one_process, str(run), resumed=True)


@pytest.mark.slow
def test_two_tasks_on_slurm_requeued_equal_one(one_process, tmp_path, slurm_cluster):
    """One Slurm job with 2 tasks (sweeps/launcher.launch_slurm, sweeps/job.TrainJob): submitit's environment
    -> torchrun variables -> gloo; `scontrol requeue` mid-run -> both ranks stop, the job resumes."""
    from mlflow.tracking import MlflowClient

    from fvq.core.rundir import prepare_run_dir
    from slurm.devcluster import running_again, wait_until
    from slurm.spec import load_spec
    from sweeps.job import TrainJob
    from sweeps.launcher import git_commit, launch_slurm
    from sweeps.plan import Planned

    cfg = apply_overrides(Config(), TINY)
    runs, uri = tmp_path / "runs", f"sqlite:///{tmp_path}/mlflow.db"
    run = str(runs / "ddp2")
    prepare_run_dir(cfg, run)
    spec = load_spec("dev").replace(tasks_per_node=2, gpus_per_node=2, mem_gb=4,
                                    setup=("export PYTHONUNBUFFERED=1", "export OMP_NUM_THREADS=1"))
    commit, _ = git_commit()
    job = launch_slurm([Planned("ddp2", run, {}, "missing", cfg=cfg)], str(runs), spec, commit,
                       lambda p: TrainJob(p.run_dir, uri, "ddp-test"), dirty=True)["ddp2"]
    wait_until(lambda: step_of(run) >= 12, 240, "the 2-task run past its third checkpoint")
    slurm_cluster.run("scontrol", "requeue", job)
    # the scheduler's part of the restart has deadlines from its own delays; the 400 s below is training time
    slurm_cluster.wait_job(job, running_again, slurm_cluster.delays().requeue_s, "the requeued run to start again")
    wait_until(lambda: json.load(open(os.path.join(run, "status.json"))).get("state") == "FINISHED", 400,
               "the requeued 2-task run finished")
    assert len(json.load(open(os.path.join(run, "attempts.json")))) == 2  # counted by rank 0 only
    logs = {p.name: p.read_text(errors="ignore") for p in (runs / ".submitit").rglob("*_log.out")}
    assert any("_1_log.out" in name for name in logs), sorted(logs)  # rank 1 ran as the job's second task
    assert "resumed" in "".join(logs.values())
    assert_same_run(one_process, run, resumed=True)
    run_id = json.load(open(os.path.join(run, "mlflow.json")))["run_id"]
    client = MlflowClient(uri)
    assert client.get_run(run_id).data.tags["world_size"] == "2"  # one data-parallel run, not two runs
    hist = client.get_metric_history(run_id, "train/usage")
    # every log step once; steps logged again after the requeue (between the checkpoint and the signal) are
    # the same steps, not a second rank's copies
    assert {m.step for m in hist} == set(range(4, 41, 4))


# ---- gradient accumulation (optim.accum): the same global batch in micro-batches ------------------------
def test_accumulation_in_one_process_equals_one_process(one_process, tmp_path):
    p = cli(tmp_path / "acc4", "optim.accum=4")  # 4 micro-batches of 2 images per optimiser step
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert_same_run(one_process, str(tmp_path / "acc4"))
    # with the PatchGAN on (its BatchNorm sees micro-batches: not compared, only run)
    p = cli(tmp_path / "gan", "optim.accum=2", "loss.disc_weight=0.5", "optim.steps=8")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err


@pytest.mark.slow
def test_two_processes_with_accumulation_equal_one_process(one_process, tmp_path):
    p = cli(tmp_path / "two-acc2", "optim.accum=2", nproc=2)  # gloo: 2 ranks x 2 micro-batches of 2 images
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert_same_run(one_process, str(tmp_path / "two-acc2"))


@pytest.mark.parametrize("args, nproc, words", [
    (["optim.accum=3"], 1, "optim.accum=3 must be >= 1 and divide optim.batch=8"),
    (["optim.accum=8"], 2, "optim.accum=8 does not divide the 4 images per process of optim.batch=8 over 2"),
])
def test_accumulation_that_does_not_divide_is_one_line_exit_2(tmp_path, args, nproc, words):
    p = cli(tmp_path / "r", *args, nproc=nproc)
    _, err = p.communicate(timeout=300)
    assert p.returncode != 0 and words in err, err
    if nproc == 1:
        assert p.returncode == 2 and err.strip().count("\n") == 0
