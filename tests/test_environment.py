"""The environment record (fvq/core/environment.py): what it holds, one entry per start of a run, the env.*
tags training sends its tracker, and the results CSV columns analysis.collect makes of them."""
import hashlib
import json

import pandas as pd
import torch

from fvq.core import environment
from fvq.core.config import Config, apply_overrides

TINY = ["optim.steps=4", "log.every=1", "log.ckpt_every=2", "data.train_size=32", "data.val_size=8",
        "eval.images=8", "eval.batch=8", "optim.batch=8", "eval.fid=false", "log.progress=off",
        "quant.codebook_size=64"]


def test_the_record_names_the_software_the_kernels_and_the_lock():
    env = environment.gather()
    assert list(env) == list(environment.FIELDS) and all(env.values()), env
    assert env["isa"] == torch.backends.cpu.get_cpu_capability() and env["torch"] == torch.__version__
    assert env["lock"] == hashlib.sha256(environment.LOCK.read_bytes()).hexdigest()
    assert env["threads"] == str(torch.get_num_threads()) and env["device"] == "cpu"


def test_a_missing_lock_and_a_pinned_capability_are_recorded_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    env = environment.gather(lock=tmp_path / "absent.txt")
    assert env["lock"] == "missing" and "ATEN_CPU_CAPABILITY=avx2" in env["knobs"]


def test_differences_name_the_fields_and_skip_what_one_side_did_not_record():
    a = {"isa": "AVX512", "threads": "1", "cpu": "AMD EPYC", "lock": "a" * 64}
    b = {"isa": "AVX2", "threads": "1", "cpu": "", "lock": "b" * 64}
    assert environment.differences(a, b) == [f"lock {'a' * 12} -> {'b' * 12}", "isa AVX512 -> AVX2"]
    assert environment.differences(a, {}) == []


def test_each_start_is_an_attempt_and_the_tags_say_what_changed(tmp_path):
    env = environment.gather()
    environment.record(str(tmp_path), env, 0)
    attempts = environment.record(str(tmp_path), {**env, "threads": "2"}, 40)
    assert [(a["attempt"], a["step"]) for a in environment.read(str(tmp_path))] == [(1, 0), (2, 40)]
    tags = environment.tags(attempts)
    assert tags["env.threads"] == "2" and tags["env.changed"] == "threads"
    assert "env.changed" not in environment.tags(attempts[:1])


class Tags:
    """A tracking sink that keeps the tags it was sent."""

    def __init__(self):
        self.tags = {}

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_params(self, params): ...
    def log_metrics(self, rows): ...
    def log_artifact(self, path, subdir=""): ...
    def finish(self, status): ...


def test_training_records_every_start_in_the_run_dir_and_as_tags(tmp_path):
    from fvq.train import train

    cfg = apply_overrides(Config(), TINY)
    sink = Tags()
    train(cfg, str(tmp_path), sink, log=lambda *a, **k: None)
    train(cfg, str(tmp_path), sink, log=lambda *a, **k: None)  # a second start resumes from the checkpoint
    attempts = json.loads((tmp_path / environment.FILE).read_text())
    assert [a["step"] for a in attempts] == [0, 4] and attempts[0]["threads"] == "1"
    assert sink.tags["env.isa"] == torch.backends.cpu.get_cpu_capability() and sink.tags["env.threads"] == "1"


def test_collect_writes_the_env_columns_and_leaves_unrecorded_runs_empty(tmp_path):
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from analysis.collect import expected, main
    from analysis.rows import results
    from fvq.core.config import to_flat_dict

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("fvq", artifact_location=f"file://{tmp_path}/artifacts")
    env = environment.tags([{**environment.gather(), "threads": "1"}])
    (_, c0, s0), (_, c1, s1) = expected("annealing", "cpu")
    for cfg, sig, tags in ((c0, s0, env), (c1, s1, {})):  # s1: a run from before the record
        run = client.create_run(exp, tags={"signature": sig, **tags})
        params = [Param(k, str(v)) for k, v in to_flat_dict(cfg).items()]
        for i in range(0, len(params), 100):
            client.log_batch(run.info.run_id, params=params[i:i + 100])
        client.log_batch(run.info.run_id, metrics=[Metric("eval/psnr", 20.0, 0, 800)])
        client.set_terminated(run.info.run_id, "FINISHED")
    assert main(["grid=annealing", f"tracking_uri={uri}", f"results={tmp_path}", f"runs_dir={tmp_path}/runs"]) == 0
    df = results(tmp_path, "annealing").set_index("signature")
    assert list(df.columns[-len(environment.COLUMNS):]) == list(environment.COLUMNS)
    assert df.loc[s0, "env.threads"] == "1" and df.loc[s0, "env.isa"] == env["env.isa"]  # text, not 1.0
    assert df.loc[s1, [c for c in environment.COLUMNS]].isna().all()  # never invented
    assert pd.isna(df.loc[s0, "env.changed"])
