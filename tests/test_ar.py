"""The generation stage: token caches (plain and ten-crop + flip), AR training + resume, evaluation (IS where
Inception logits exist, missing with the reason where not), the grid=generation launcher."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from fvq.core.checkpoint import Preempted
from fvq.generation.ar import ARConfig, ar_overrides, inception_logits, inception_score, train_ar
from fvq.core.config import ConfigError, Config, apply_overrides, to_json
from fvq.core.rundir import read_status
from fvq.generation.shared import SharedTrainingError, check_trained, find_trained
from fvq.generation.tokens import TokenizerError, cache_path, check_tokenizer, token_cache, tokenizer_key, views
from fvq.train import train
from conftest import needs_fashion_mnist
from sweeps.generation import CPU_AR, CPU_TOKENIZER
from sweeps.state import progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK = ["optim.steps=3", "log.every=1", "data.train_size=64", "data.val_size=16", "eval.images=16",
       "eval.batch=16", "optim.batch=8", "quant.codebook_size=64", "eval.fid=false", "log.progress=off"]
AR = dict(train_images=64, batch=8, steps=6, log_every=2, ckpt_every=100, samples=4)


def fake_run(d, state="FINISHED", reason="", cfg=None):
    """A run dir as fvq/train.py leaves it, without training (for the refusals that read files only)."""
    os.makedirs(d, exist_ok=True)
    (d / "config.json").write_text(to_json(cfg or Config()))
    (d / "status.json").write_text(json.dumps({"state": state, "reason": reason}))
    (d / "ckpt.pt").write_bytes(b"")
    return d


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok") / "sig0"
    train(apply_overrides(Config(), TOK), str(d), log=lambda *a, **k: None)
    return str(d)


def test_refuses_missing_unfinished_and_failed_tokenizers(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        check_tokenizer(str(tmp_path / "nope"))
    with pytest.raises(TokenizerError, match="FAILED: nan loss"):
        check_tokenizer(str(fake_run(tmp_path / "f", "FAILED", "nan loss")))
    with pytest.raises(TokenizerError, match="RUNNING, not FINISHED"):
        check_tokenizer(str(fake_run(tmp_path / "r", "RUNNING")))


def test_foreign_token_cache_is_refused_and_kept(tmp_path):
    run = fake_run(tmp_path / "abc")
    path = cache_path(str(run), "train", 64)
    torch.save({"key": "other:0123456789"}, path)
    before = open(path, "rb").read()
    with pytest.raises(TokenizerError, match="written by tokenizer 'other:0123456789', not 'abc:"):
        token_cache(str(run), "train", 64)
    assert open(path, "rb").read() == before  # nothing overwritten


def test_ar_config_refuses_bad_guidance_and_keys():
    with pytest.raises(ValueError, match="< 1"):
        ar_overrides(["cfg_scale=0.9"])
    with pytest.raises(ValueError, match="class_dropout=0"):
        ar_overrides(["cfg_scale=1.5", "class_dropout=0"])
    with pytest.raises(ConfigError, match="expected int"):
        ar_overrides(["steps=ten"])
    with pytest.raises(ConfigError, match="AR override 'nope'"):
        ar_overrides(["nope=1"])
    with pytest.raises(ValueError, match="aug='flip'"):
        ar_overrides(["aug=flip"])
    with pytest.raises(ValueError, match="cfg_interval=-2"):
        ar_overrides(["cfg_interval=-2"])
    assert ar_overrides(["cfg_scale=1.75", "model=L"]).cfg_scale == 1.75
    assert ar_overrides(["aug=ten_crop_flip", "cfg_interval=100"]).aug == "ten_crop_flip"
    assert ARConfig(batch=256, lr_scale=1.0).lr == pytest.approx(1e-4)  # Table 6: 1e-4 at batch 256


def test_ten_crop_views_are_torchvisions_ten_crop():
    """LlamaGen's --ten-crop: TenCrop(size) = four corners + centre, then the same five of the mirrored image."""
    x = torch.arange(3 * 12 * 14, dtype=torch.float32).view(3, 12, 14)
    v = views(x, 8)
    assert v.shape == (10, 3, 8, 8)
    assert torch.equal(v[0], x[:, :8, :8]) and torch.equal(v[3], x[:, -8:, -8:])
    assert torch.equal(v[4], x[:, 2:10, 3:11])  # centre
    assert torch.equal(v[5], x.flip(-1)[:, :8, :8])  # mirrored top-left = flipped top-right
    assert sorted(w.flip(-1).sum().item() for w in v[5:]) == sorted(w.sum().item() for w in v[:5])
    assert cache_path("r", "train", 64) == os.path.join("r", "tokens-train-64.pt")  # plain caches keep their name
    assert cache_path("r", "train", 64, "ten_crop_flip") == os.path.join("r", "tokens-train-64-ten_crop_flip.pt")


def test_inception_score_where_logits_exist_and_missing_with_reason(monkeypatch):
    fn, why = inception_logits("torchscript", "weights/default_1.pt", "cpu")  # pool3 only: no logits
    assert fn is None and "has no logits" in why
    assert inception_score(torch.zeros(5, 1008)) == (None, "5 samples < 10 Inception Score splits")
    assert inception_score(torch.randn(1, 1008).expand(40, -1))[0] == pytest.approx(1.0)  # one class: IS 1
    sharp = torch.eye(1008)[torch.arange(200) % 4] * 50  # 4 equally used, confident classes
    assert 2.5 < inception_score(sharp)[0] <= 4.0 + 1e-6
    seen = {}

    class Stub(torch.nn.Module):  # torch-fidelity's inception-v3-compat: uint8 in, a tuple of features out
        def __init__(self, name, features, feature_extractor_weights_path):
            super().__init__()
            seen.update(name=name, features=features, path=feature_extractor_weights_path)

        def forward(self, u8):
            assert u8.dtype == torch.uint8
            return (u8.float().mean((1, 2, 3))[:, None].expand(-1, 1008),)

    import torch_fidelity.feature_extractor_inceptionv3 as fe
    monkeypatch.setattr(fe, "FeatureExtractorInceptionV3", Stub)
    fn, why = inception_logits("torch-fidelity", "w.pth", "cpu")
    out = fn(torch.full((70, 3, 4, 4), 0.5))
    assert why == "" and out.shape == (70, 1008) and out.dtype == torch.float64 and float(out[0, 0]) == 128.0
    assert seen == {"name": "inception-v3-compat", "features": ["logits_unbiased"], "path": "w.pth"}


@pytest.mark.slow
def test_token_cache_extracted_once_and_keyed(tokenizer):
    c = token_cache(tokenizer, "train", 64, log=lambda *a, **k: None)
    assert c["indices"].shape == (64, 64) and c["vocab"] == 64 and c["side"] == 8
    assert c["classes"] >= 2 and 0 <= int(c["labels"].min()) and int(c["labels"].max()) < c["classes"]
    assert c["key"] == tokenizer_key(tokenizer)
    mtime = os.path.getmtime(cache_path(tokenizer, "train", 64))
    assert torch.equal(token_cache(tokenizer, "train", 64)["indices"], c["indices"])
    assert os.path.getmtime(cache_path(tokenizer, "train", 64)) == mtime  # reused, not re-extracted


@pytest.mark.slow
def test_a_signal_stops_the_generator_at_that_step_with_a_checkpoint_and_resuming_changes_nothing(tokenizer, tmp_path,
                                                                                                   monkeypatch):
    """SIGTERM (a preemption) between periodic checkpoints: the step ends, a checkpoint of that step is written,
    the run is PREEMPTED, the handlers are put back; the resumed run trains the uninterrupted run's weights."""
    import signal

    monkeypatch.setattr("fvq.generation.ar.evaluate_generator", lambda c, m, d, dev: ({}, {}, {}))  # training only
    cfg = ARConfig(tokenizer=tokenizer, **{**AR, "ckpt_every": 1000})  # no periodic checkpoint before the end
    quiet = lambda *a, **k: None
    ref = tmp_path / "ref"
    train_ar(cfg, str(ref), log=quiet)
    cut, before = tmp_path / "cut", signal.getsignal(signal.SIGTERM)
    term = lambda line, **k: os.kill(os.getpid(), signal.SIGTERM) if line.startswith("[ar] step 4/") else None
    with pytest.raises(Preempted, match=f"signal {int(signal.SIGTERM)} at step 4: checkpoint written"):
        train_ar(cfg, str(cut), log=term)
    assert signal.getsignal(signal.SIGTERM) is before  # a signal in the evaluation phase stops the process
    assert read_status(cut)["state"] == "PREEMPTED" and read_status(cut)["step"] == 4
    assert torch.load(cut / "ckpt.pt", weights_only=True)["step"] == 4
    spent = torch.load(cut / "ckpt.pt", weights_only=True)["time"]  # steps 1-4, kept for the resumed attempt
    res = train_ar(cfg, str(cut), log=quiet)
    assert spent["train_s"] > 0 and res["time"]["train_s"] > spent["train_s"]  # both attempts counted
    a, b = (torch.load(d / "ckpt.pt", weights_only=True)["model"] for d in (ref, cut))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]


@pytest.mark.slow
def test_the_generator_entry_point_exits_3_with_one_line_on_sigterm(tokenizer, tmp_path):
    import signal
    import time

    out = tmp_path / "g"
    args = [sys.executable, "-m", "fvq.generation.ar", f"out={out}", f"tokenizer={tokenizer}", "train_images=64",
            "batch=8", "steps=100000", "log_every=2", "ckpt_every=100000", "samples=4"]
    p = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": REPO})
    deadline = time.monotonic() + 300
    while read_status(out).get("step", 0) < 4:
        assert time.monotonic() < deadline and p.poll() is None, "the generator did not train"
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 3 and err.strip().startswith("preempted: signal") and err.strip().count("\n") == 0, err
    assert read_status(out)["state"] == "PREEMPTED"


@pytest.mark.slow
def test_ar_resume_equals_uninterrupted_and_missing_metrics_have_reasons(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("FVQ_FID_WEIGHTS", str(tmp_path / "no-weights.pt"))  # gFID: missing, with the reason
    import fvq.generation.ar as ar

    cfg = ARConfig(tokenizer=tokenizer, **AR)
    quiet = dict(log=lambda *a, **k: None)
    seen, evaluate = [], ar.evaluate_generator  # status.json as the launch's progress line reads it
    monkeypatch.setattr(ar, "evaluate_generator", lambda c, m, d, dev: seen.append(read_status(d)) or evaluate(c, m, d, dev))
    ref = train_ar(cfg, str(tmp_path / "ref"), log=lambda *a, **k: seen.append(read_status(tmp_path / "ref")))
    assert [(s["state"], s["step"], s.get("phase")) for s in seen] == [
        ("RUNNING", 2, None), ("RUNNING", 4, None), ("RUNNING", 6, None), ("RUNNING", 6, "gFID")]
    assert [progress(s, 6) for s in seen[-2:]] == ["6/6", "6/6 gFID"] and progress(seen[-1], live=False) == "6"
    cut = train_ar(cfg, str(tmp_path / "cut"), stop_after=3, **quiet)
    assert cut["preempted"] and json.loads((tmp_path / "cut" / "status.json").read_text())["state"] == "PREEMPTED"
    curve = tmp_path / "cut" / "metrics.jsonl"  # each row is written as it is logged: a kill loses none
    assert [json.loads(x)["step"] for x in curve.read_text().splitlines()] == [2]
    with open(curve, "a") as f:  # a kill after logging step 4 but before its checkpoint, mid-way through a line
        f.write(json.dumps({"step": 4, "ar/loss": 99.0}) + "\n" + '{"step": 6, "ar/lo')
    res = train_ar(cfg, str(tmp_path / "cut"), **quiet)
    steps = lambda run: [(r["step"], r["ar/loss"]) for r in map(json.loads, (tmp_path / run / "metrics.jsonl").open())]
    assert steps("cut") == steps("ref")  # resumed at step 3: the rows after it dropped and logged again, once
    a = torch.load(tmp_path / "ref" / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    from fvq.core import environment  # each start's machine and kernels, with the step it started at
    assert [(e["attempt"], e["step"], e["isa"]) for e in environment.read(str(tmp_path / "cut"))] == [
        (1, 0, torch.backends.cpu.get_cpu_capability()), (2, 3, torch.backends.cpu.get_cpu_capability())]
    assert res["metrics"] == ref["metrics"] and "gfid" in ref["missing"] and "no FID Inception" in ref["missing"]["gfid"]
    assert "no logits" in ref["missing"]["is"] and "is" not in ref["metrics"]
    assert (tmp_path / "ref" / "samples.png").exists()
    with pytest.raises(TokenizerError, match="AR vocab=99"):
        train_ar(ARConfig(tokenizer=tokenizer, vocab=99, **AR), str(tmp_path / "v"), **quiet)


@pytest.mark.slow
def test_a_generator_scored_again_takes_the_weights_it_would_train(tokenizer, tmp_path, monkeypatch):
    """Another evaluation of the same training (CFG, samples, no held-out loss): the run takes a finished
    run's weights and curve and only evaluates; they are bit for bit the weights a fresh run trains."""
    monkeypatch.setenv("FVQ_FID_WEIGHTS", str(tmp_path / "no-weights.pt"))
    quiet = dict(log=lambda *a, **k: None)
    donor = tmp_path / "runs" / "gen-a"
    train_ar(ARConfig(tokenizer=tokenizer, **{**AR, "val_images": 16, "cfg_scale": 1.0}), str(donor), **quiet)
    here = ARConfig(tokenizer=tokenizer, **{**AR, "cfg_scale": 2.0, "samples": 8, "cfg_sweep": "1.5"})
    flat = dataclasses.asdict(here)
    assert find_trained(str(tmp_path / "runs"), flat) == str(donor)
    assert find_trained(str(tmp_path / "runs"), {**flat, "seed": 1}) == ""  # another training: none
    assert find_trained(str(tmp_path / "runs"), {**flat, "steps": 8}) == ""
    with pytest.raises(SharedTrainingError, match="trained another generator \\(seed=0 there, 1 here"):
        check_trained(str(donor), {**flat, "seed": 1})
    from sweeps.generation import _shared_training  # the launch's plan: only a run not yet started takes them
    assert _shared_training(here, str(tmp_path / "runs"), "missing", "w").init_from == str(donor)
    assert _shared_training(here, str(tmp_path / "runs"), "preempted", "w").init_from == ""  # its own checkpoint
    taken = train_ar(dataclasses.replace(here, init_from=str(donor)), str(tmp_path / "taken"), **quiet)
    fresh = train_ar(here, str(tmp_path / "fresh"), **quiet)
    a = torch.load(tmp_path / "taken" / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "fresh" / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows(tmp_path / "taken") == rows(donor)  # the curve that trained it, held-out loss included
    assert [r["ar/loss"] for r in rows(donor)] == [r["ar/loss"] for r in rows(tmp_path / "fresh")]
    assert taken["config"]["init_from"] == str(donor) and taken["metrics"].keys() == fresh["metrics"].keys()
    # the cost: the taken run trained nothing (its weights' time is the donor's), both evaluated
    assert taken["time"]["train_s"] == taken["time"]["train_cpu_s"] == 0 and fresh["time"]["train_cpu_s"] > 0
    assert taken["time"]["eval_s"] > 0 and json.loads((tmp_path / "taken" / "final.json").read_text())["time"]


@pytest.mark.slow
def test_ten_crop_cache_and_training(tokenizer, tmp_path, monkeypatch):
    """ten_crop_flip: ten code maps per image in their own cache file, same labels; training draws one each."""
    monkeypatch.setenv("FVQ_FID_WEIGHTS", str(tmp_path / "no-weights.pt"))
    quiet = dict(log=lambda *a, **k: None)
    plain = token_cache(tokenizer, "train", 64, **quiet)
    c = token_cache(tokenizer, "train", 64, aug="ten_crop_flip", **quiet)
    assert c["aug"] == "ten_crop_flip" and c["indices"].shape == (64, 10, 64) and c["indices"].dtype == torch.int16
    assert torch.equal(c["labels"], plain["labels"]) and c["side"] == plain["side"]
    assert 0 <= int(c["indices"].min()) and int(c["indices"].max()) < c["vocab"]
    assert os.path.exists(cache_path(tokenizer, "train", 64, "ten_crop_flip"))
    wrong = cache_path(tokenizer, "train", 32)  # a ten-crop cache under a plain cache's name is refused
    torch.save({**c, "indices": c["indices"][:32].clone(), "labels": c["labels"][:32].clone()}, wrong)
    with pytest.raises(TokenizerError, match="holds aug='ten_crop_flip' codes, not 'none'"):
        token_cache(tokenizer, "train", 32)
    os.remove(wrong)
    res = train_ar(ARConfig(tokenizer=tokenizer, aug="ten_crop_flip", **{**AR, "steps": 2}), str(tmp_path / "t"),
                   **quiet)
    assert res["step"] == 2 and res["config"]["aug"] == "ten_crop_flip"


@pytest.mark.slow
def test_validation_loss_curve_and_cfg_sweep_from_one_generator(tokenizer, tmp_path, monkeypatch):
    """val_images: the held-out AR loss at every log step (the calibration's curve); cfg_sweep: more guidance
    scales scored on the same generator and real set (gFID, precision, recall each)."""
    if not os.path.isfile(os.path.join(REPO, "weights", "default_1.pt")):
        pytest.skip("no FID weights (make weights)")
    import fvq.generation.ar as ar

    scales, generate = [], ar.generate
    monkeypatch.setattr(ar, "generate", lambda *a, **k: scales.append(k["cfg"]) or generate(*a, **k))
    cfg = ARConfig(tokenizer=tokenizer, val_images=8, cfg_sweep="1.5,2", **{**AR, "samples": 8})
    res = train_ar(cfg, str(tmp_path / "g"), log=lambda *a, **k: None)
    rows = [json.loads(x) for x in open(tmp_path / "g" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "ar/val_loss" in r] == [2, 4, 6]
    assert all(0 < r["ar/val_loss"] < 10 for r in rows if "ar/val_loss" in r)
    m = res["metrics"]
    assert {"gfid", "precision", "recall", "gfid_cfg1.5", "precision_cfg1.5", "recall_cfg1.5"} <= set(m)
    assert sorted(set(scales)) == [1.0, 1.5, 2.0]  # (a 3-step tokenizer decodes every code alike: same gFIDs)


def _run(tmp_path, *args):
    return subprocess.run([sys.executable, "sweeps/run.py", "grid=generation", f"runs_dir={tmp_path}",
                           "launcher=local", "dry=true", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
@needs_fashion_mnist
def test_generation_grid_bad_inputs_exit_2_and_write_nothing(tmp_path):
    ok = _run(tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert f" {CPU_AR['model']} " in ok.stdout and len(ok.stdout.strip().splitlines()) == 5  # cpu: one run a tokenizer
    assert ok.stdout.strip().splitlines()[-1].startswith("to submit: ~")  # and what they cost
    assert " for 2 tokenizer(s), " in ok.stdout and " for 2 generator(s) " in ok.stdout
    seeded = _run(tmp_path, "seeds=3")  # replicates: 2 tokenizer kinds x 3 seeds, each its own tokenizer
    assert seeded.returncode == 0 and len(seeded.stdout.strip().splitlines()) == 9, seeded.stdout
    assert ok.stdout.splitlines()[2].split()[0] in seeded.stdout  # seed 0 keeps its signatures
    assert len({line.split()[3] for line in seeded.stdout.splitlines()[2:-1]}) == 6  # six tokenizers
    for args, msg in [(["seeds=2", "ar.seed=1"], "generator seed given twice"), (["ar.cfg_scale=0.5"], "< 1"), (["ar.cfg_scale=1.5", "ar.class_dropout=0"], "class_dropout=0"),
                      (["ar.vocab=16384"], "codebook size 1024"), (["ar.nope=1"], "AR override 'nope'"),
                      (["ar.cfg_sweep=1.5,0.5"], "cfg=0.5 < 1"), (["ar.samples=100000"], "real images"),
                      ([f"ar.init_from={tmp_path}"], "not a finished generator run")]:
        r = _run(tmp_path, *args)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    sig = ok.stdout.splitlines()[2].split()[3]  # the vq tokenizer's signature
    from sweeps.grids.generation import TOKENIZERS
    from sweeps.scale import resolve

    fake_run(tmp_path / sig, "FAILED", "diverged", resolve({**TOKENIZERS["vq"], **CPU_TOKENIZER}, "cpu"))
    r = _run(tmp_path)
    assert r.returncode == 2 and f"tokenizer run {sig} FAILED (diverged)" in r.stderr
    assert sorted(os.listdir(tmp_path)) == [sig]  # nothing written besides the fixture
    r = _run(tmp_path, "dry=false", "launcher=slurm")
    assert r.returncode == 2


def test_a_cpu_launch_says_what_it_will_spend(tmp_path):
    """The plan line's CPU-hours: the steps a generator has left at its measured rate, none for one that takes a
    finished run's weights, its evaluation over every CFG scale; tokenizers still to train at theirs; a model
    never timed is named, not guessed."""
    from types import SimpleNamespace

    from analysis.seeds import cfg_cpu_hours
    from sweeps.generation import CPU_RATES, GenPlanned, cost_line, cpu_hours

    s_step, s_img = CPU_RATES["S"]
    tok = SimpleNamespace(state="missing", cfg=Config())
    cfg = ARConfig(model="S", steps=3000, batch=64, samples=2000, cfg_sweep="1,1.5,2")

    def gen(name, state="missing", **over):
        return GenPlanned(name, str(tmp_path / name), tok, "vq", dataclasses.replace(cfg, **over), state)

    fresh, taken, resumed = gen("a"), gen("b", init_from=str(tmp_path / "donor")), gen("c", state="preempted")
    os.makedirs(resumed.run_dir)
    (tmp_path / "c" / "status.json").write_text(json.dumps({"state": "PREEMPTED", "step": 1000}))
    evaluation = 2000 * 4 * s_img
    assert cpu_hours(fresh) == pytest.approx((3000 * s_step + evaluation) / 3600)
    assert cpu_hours(taken) == pytest.approx(evaluation / 3600)
    assert cpu_hours(resumed) == pytest.approx((2000 * s_step + evaluation) / 3600)
    assert cpu_hours(gen("d", batch=128)) == pytest.approx((3000 * 2 * s_step + evaluation) / 3600)
    assert cpu_hours(gen("e", state="finished")) == 0 and cpu_hours(gen("f", model="B")) is None
    total = cpu_hours(fresh) + cpu_hours(taken) + cfg_cpu_hours(tok.cfg)
    line = cost_line([fresh, taken, gen("f", model="B")], [tok])
    assert line.startswith(f"~{total:.1f} CPU-h: {cfg_cpu_hours(tok.cfg):.1f} for 1 tokenizer(s), ")
    assert " for 3 generator(s), GPT-B never timed: not counted (" in line
