"""analysis/: every table and figure builds from small fixture CSVs; gaps are visible; collect reads a real
MLflow store and refuses a partial grid; Tables 6 and 10 are the code's own values.

tests/fixtures/results/*.csv are synthetic: made by analysis.collect from a throw-away MLflow store with
made-up metrics (commit "fixture"), trimmed; they test plumbing, never the paper's claims.
"""
import importlib
import json
import os
import shutil
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from analysis.build import FIGURES, TABLES, build_all  # noqa: E402
from analysis.cells import NO_RUNS  # noqa: E402
from conftest import needs_fashion_mnist

FIXTURES = Path(__file__).parent / "fixtures" / "results"


@pytest.fixture
def results(tmp_path):
    """The fixture CSVs plus one run's recon.png (collect copies those; a PNG is not a fixture CSV)."""
    import matplotlib.pyplot as plt
    import numpy as np

    out = tmp_path / "results"
    shutil.copytree(FIXTURES, out)
    (out / "recon").mkdir()
    plt.imsave(out / "recon" / "bf21a9e8fb.png", np.random.default_rng(0).random((34, 130, 3)))
    return out


@pytest.mark.parametrize("stem", TABLES + FIGURES)
def test_every_artefact_builds_from_fixture_csvs(stem, results, tmp_path):
    kind = "tables" if stem in TABLES else "figures"
    gaps = importlib.import_module(f"analysis.{kind}.{stem}").build(results, tmp_path / kind)
    assert isinstance(gaps, list)
    for ext in ("md", "tex") if kind == "tables" else ("png", "pdf"):
        assert (tmp_path / kind / f"{stem}.{ext}").stat().st_size > 0


def test_tables_show_paper_and_harness_rows_side_by_side(results, tmp_path):
    from analysis.tables import tab3_scaling

    gaps = tab3_scaling.build(results, tmp_path)
    md = (tmp_path / "tab3_scaling.md").read_text()
    assert "| paper | 6 | FVQ | 40 | 16 | 16k | 256 | 1.30 | 6.84 | 100% |" in md
    assert "| this harness (scale=cpu) | 6 | FVQ |" in md and "`bf21a9e8fb`" in md  # scale and signature
    assert "run not evaluated on COCO 2017 val" in md and gaps  # "—" carries its reason
    assert "\\textsuperscript{" in (tmp_path / "tab3_scaling.tex").read_text()


def test_tab3_coco_column_comes_from_runs_that_evaluated_coco(results, tmp_path):
    import shutil

    import pandas as pd

    from analysis.tables import tab3_scaling

    work = tmp_path / "coco_results"
    shutil.copytree(results, work)
    df = pd.read_csv(work / "scaling.csv", dtype=str, keep_default_na=False)
    df["coco/rfid"] = ["12.3456"] + [""] * (len(df) - 1)  # the first run was evaluated on COCO
    df.loc[1, "missing"] = "coco/rfid: no FID Inception weights"
    df.to_csv(work / "scaling.csv", index=False)
    tab3_scaling.build(work, tmp_path / "out")
    md = (tmp_path / "out" / "tab3_scaling.md").read_text()
    assert "| 12.35 (n=1) |" in md and "coco/rfid not computed: no FID Inception weights" in md


def test_a_missing_run_is_a_visible_gap_not_a_shorter_table(results, tmp_path):
    from analysis.figures import fig6_ablations

    fig, gaps = fig6_ablations.make(results)  # the depth=4 run is "missing" in the fixture
    assert any("quant.depth=4" in g and "missing" in g for g in gaps)
    assert "no run" in [t.get_text() for t in fig.axes[1].texts]
    # at scale=cpu rFID over 64 images is indicative only: the panels plot the L2 error (analysis/cells.py)
    assert "L2" in fig.axes[0].get_ylabel() and "L2" in fig.axes[1].get_ylabel()


def test_seeds_of_a_point_are_one_cell_mean_sd_n(results, tmp_path):
    import pandas as pd

    from analysis.aggregate import harness
    from analysis.cells import Notes, metric
    from analysis.rows import point_signature

    runs = pd.read_csv(results / "depth.csv", dtype=str)
    ref = runs[runs["signature"] == "bf21a9e8fb"]
    seeds = [ref.assign(seed=s, signature=f"sig{s}", psnr=str(v), usage=str(u))
             for s, v, u in ((0, 20.0, 0.90), (1, 21.0, 0.92), (2, 22.0, 0.94))]
    pd.concat(seeds).to_csv(results / "depth.csv", index=False)
    for other in ("latent_dim", "annealing", "patch_size", "codebook_size", "projector", "schedule", "scaling"):
        (results / f"{other}.csv").unlink(missing_ok=True)
    (row,) = harness(results, {})
    notes = Notes()
    assert metric(row, "psnr", notes) == "21.00 ± 1.00 (n=3)"
    assert metric(row, "usage", notes) == "92.0 ± 2.0% (n=3)"
    assert row["signature"] == "sig0,sig1,sig2" and point_signature({}) == row["paper_signature"]
    assert metric(row, "rfid", notes).endswith("[1]") and "indicative only" in notes.reasons[0]


def test_claims_verdicts_pair_seeds_and_correct_for_the_family(results, tmp_path):
    import pandas as pd

    from analysis.rows import ResultsError, point_signature
    from analysis.tables.claims import build, current_signature
    from sweeps.grids._fragments import no_anneal, vqbridge

    ref = pd.read_csv(results / "depth.csv", dtype=str)
    ref = ref[ref["signature"] == "bf21a9e8fb"].assign(scale="cpu", status="FINISHED")
    const = point_signature({**vqbridge, **no_anneal})

    def write(anneal, constant, seeds_b=None):  # each row signed as its point and seed resolve now
        rows = [ref.assign(seed=i, signature=current_signature(vqbridge, i), psnr=str(v))
                for i, v in enumerate(anneal)]
        rows += [ref.assign(seed=s, signature=current_signature({**vqbridge, **no_anneal}, s), psnr=str(v),
                            paper_signature=const) for s, v in zip(seeds_b or range(len(constant)), constant)]
        pd.concat(rows).to_csv(results / "annealing.csv", index=False)
        build(results, tmp_path)
        line = next(x for x in (tmp_path / "claims.md").read_text().splitlines() if x.startswith("| 4a |"))
        return [c.strip() for c in line.split("|")[1:-1]]

    for other in ("depth", "latent_dim", "patch_size", "codebook_size", "projector", "schedule", "scaling"):
        (results / f"{other}.csv").unlink(missing_ok=True)
    row = write((27.0, 27.5, 26.5), (25.0, 25.3, 24.7))  # per-seed gains 2.0, 2.2, 1.8
    assert row[5:9] == ["27.00 ± 0.50 (n=3)", "25.00 ± 0.30 (n=3)", "paired, n = 3", "+2.00 [+1.50, +2.50]"], row
    sigs = [current_signature(vqbridge, i) for i in range(3)]
    sigs_b = [current_signature({**vqbridge, **no_anneal}, i) for i in range(3)]
    assert row[10] == "0.25" and row[12] == "reproduced" and row[14] == ", ".join(sigs) + "; " + ", ".join(sigs_b)
    assert write((27.0, 27.5, 26.5), (25.0, 25.3))[12] == "inconclusive (n = 2 < 3)"
    noisy = write((27.0, 27.5, 26.5), (26.8, 27.0, 27.2))
    assert noisy[12] == "inconclusive" and (noisy[13].startswith("n = ") or "not reachable" in noisy[13])
    assert write((25.0, 25.3, 24.7), (27.0, 27.5, 26.5))[12] == "not reproduced"
    unpaired = write((27.0, 27.5, 26.5), (25.0, 25.3, 24.7), seeds_b=(5, 6, 7))
    assert unpaired[7].startswith("welch") and "share 0 seed" in unpaired[7]  # said in the row, not an error
    assert "claim 4a" not in " ".join(build(results, tmp_path))  # the gaps name only claims without runs
    # a check beyond the paper (the DiT bridge) is tested in its own Holm family: 4a's adjusted p is unchanged
    before = write((27.0, 27.5, 26.5), (25.0, 25.3, 24.7))[11]
    dit = {**vqbridge, "quant.bridge": "dit"}
    pd.concat([ref.assign(seed=i, signature=current_signature(dit, i), psnr=str(v), paper_signature=point_signature(dit))
               for i, v in enumerate((26.9, 27.6, 26.4))]).to_csv(results / "bridge.csv", index=False)
    row = write((27.0, 27.5, 26.5), (25.0, 25.3, 24.7))
    check = next(x for x in (tmp_path / "claims.md").read_text().split("Checks beyond the paper")[1].splitlines()
                 if x.startswith("| B16k |")).split("|")
    assert row[11] == before and check[8].strip() == "paired, n = 3" and check[13].strip() != "not yet run"
    df = pd.read_csv(results / "annealing.csv")
    df.drop(columns="seed").to_csv(results / "annealing.csv", index=False)
    with pytest.raises(ResultsError, match="annealing.csv: no seed column"):
        build(results, tmp_path)


@pytest.mark.parametrize("stem", FIGURES)
def test_figure_without_data_carries_the_no_runs_mark(stem, tmp_path):
    module = importlib.import_module(f"analysis.figures.{stem}")
    fig, gaps = module.make(tmp_path)  # an empty results dir
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    if stem == "fig1_comparison":  # panels (a) and (b) are the paper's own data
        assert fig.axes[2].texts[0].get_text().startswith(NO_RUNS)
    else:
        assert any(t.startswith(NO_RUNS) for t in texts), stem
    assert gaps, stem


def test_build_reports_one_line_per_artefact(results, tmp_path, capsys):
    report = build_all(results, tmp_path / "t", tmp_path / "f")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(TABLES) + len(FIGURES) == len(report)
    assert all(line.split(": ", 1)[1].startswith("built") for line in lines)
    assert any("built with gaps: " in line for line in lines)


def test_table6_is_generated_from_the_code_presets(tmp_path, monkeypatch):
    from analysis.tables import tab6_config
    from fvq.core.config import base_config

    cfg = base_config("paper")
    assert tab6_config.build(tmp_path, tmp_path) == []  # the presets agree with the paper's Table 6
    md = (tmp_path / "tab6_config.md").read_text()
    s = cfg.sched
    assert f"warmup({s.warmup:g}) [baselr({s.constant:g})–linear({1 - s.constant:g})]" in md
    assert f"β1 = {cfg.optim.beta1:g}, β2 = {cfg.optim.beta2:g}" in md and "DIFFERS" not in md
    real = tab6_config.describe
    monkeypatch.setattr(tab6_config, "describe", lambda scale: {**real(scale), "Linear Learning Rate": "1 to 0.1"})
    gaps = tab6_config.build(tmp_path, tmp_path)
    assert gaps == ["Table 6 'Linear Learning Rate' differs: paper '1 to 0.01', code '1 to 0.1'"]
    assert "| Linear Learning Rate | 1 to 0.01 | 1 to 0.1 | DIFFERS |" in (tmp_path / "tab6_config.md").read_text()


def test_table10_is_computed_by_fvq_flops(tmp_path):
    pytest.importorskip("fvq.vq.flops")
    from analysis.tables import tab10_flops

    assert tab10_flops.build(tmp_path, tmp_path) == []
    md = (tmp_path / "tab10_flops.md").read_text()
    for size in (16384, 262144):
        cells = [f"{tab10_flops.flops(kind, size) / 1e9:.2f}G" for kind in ("linear", "mlp", "vqbridge")]
        row = next(line for line in md.splitlines() if line.startswith(f"| fvq.vq.flops.projector_flops | {size:,} |"))
        assert all(c in row for c in cells), (row, cells)


# ---- collect: a real local MLflow store (sqlite), runs tagged with a real grid's signatures ----------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    client.create_experiment("fvq", artifact_location=f"file://{root}/artifacts")
    return uri, client


def log_run(client, cfg, sig, status="FINISHED", **params):
    from mlflow.entities import Metric, Param

    from fvq.core.config import to_flat_dict

    run = client.create_run(client.get_experiment_by_name("fvq").experiment_id,
                            tags={"signature": sig, "commit": "abc123", "scale": "cpu"})
    flat = {**to_flat_dict(cfg), **params}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in list(flat.items())[:100]])
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in list(flat.items())[100:]])
    client.log_batch(run.info.run_id, metrics=[Metric("eval/rfid", 41.5, 0, 600), Metric("eval/usage", 0.97, 0, 600)]
                     + [Metric("train/usage", s / 600, 0, s) for s in (100, 300, 600)])
    client.set_tag(run.info.run_id, "missing.lpips", "disabled (eval.lpips=false)")
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_collect_refuses_a_partial_grid_then_writes_it_with_gaps_or_whole(store, tmp_path, capsys):
    import pandas as pd

    from analysis.collect import expected, main

    uri, client = store
    (p0, c0, s0), (p1, c1, s1) = expected("annealing", "cpu")
    log_run(client, c0, s0)
    log_run(client, c1, s1, status="FAILED")
    (tmp_path / "runs" / s0).mkdir(parents=True)
    (tmp_path / "runs" / s0 / "recon.png").write_bytes(b"png")
    args = ["grid=annealing", f"tracking_uri={uri}", f"results={tmp_path}", f"runs_dir={tmp_path / 'runs'}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{s1}: failed" in err and "allow_partial=true" in err
    assert not (tmp_path / "annealing.csv").exists() and not (tmp_path / "recon").exists()

    assert main(args + ["allow_partial=true"]) == 0
    df = pd.read_csv(tmp_path / "annealing.csv", dtype={"signature": str})
    gap = df[df["signature"] == s1].iloc[0]
    assert gap["status"] == "FAILED" and pd.isna(gap["rfid"])  # the gap stays visible
    done = df[df["signature"] == s0].iloc[0]
    assert done["rfid"] == 41.5 and done["commit"] == "abc123" and done["source"] == "harness"
    assert done["missing"] == "lpips: disabled (eval.lpips=false)" and json.loads(done["point"]) == p0
    assert (tmp_path / "recon" / f"{s0}.png").read_bytes() == b"png"  # fig5 reads results/recon/ only

    log_run(client, c1, s1)  # the retried run finishes: the newest FINISHED run is taken
    assert main(args) == 0
    curves = pd.read_csv(tmp_path / "annealing_curves.csv", dtype={"signature": str})
    assert set(curves["signature"]) == {s0, s1} and list(curves[curves["signature"] == s0]["step"]) == [100, 300, 600]

    # a store from another session holds only s1: s0's recorded row (run id, commit, curves) is kept, not lost
    from mlflow.tracking import MlflowClient

    first = pd.read_csv(tmp_path / "annealing.csv", dtype={"signature": str, "run_id": str})
    other = MlflowClient(uri2 := f"sqlite:///{tmp_path}/other.db")
    other.create_experiment("fvq", artifact_location=f"file://{tmp_path}/other-artifacts")
    new_s1 = log_run(other, c1, s1)
    assert main([a if not a.startswith("tracking_uri") else f"tracking_uri={uri2}" for a in args]) == 0
    again = pd.read_csv(tmp_path / "annealing.csv", dtype={"signature": str, "run_id": str}).set_index("signature")
    assert again.loc[s0, "run_id"] == first.set_index("signature").loc[s0, "run_id"]  # not overwritten
    assert again.loc[s1, "run_id"] == first.set_index("signature").loc[s1, "run_id"] != new_s1  # first kept
    assert "second run of that signature" in capsys.readouterr().err
    curves = pd.read_csv(tmp_path / "annealing_curves.csv", dtype={"signature": str})
    assert list(curves[curves["signature"] == s0]["step"]) == [100, 300, 600] and len(again) == 2

    # a row whose point and seed now resolve to another signature (a changed protocol) stays, SUPERSEDED,
    # collect after collect; where the grid resolves to its signature again it is that point's finished run
    table = pd.read_csv(tmp_path / "annealing.csv", dtype=str, keep_default_na=False)
    table.loc[table["signature"] == s0, "signature"] = "01dpr0t0c0"
    table.to_csv(tmp_path / "annealing.csv", index=False)
    other_args = [a if not a.startswith("tracking_uri") else f"tracking_uri={uri2}" for a in args]
    for _ in range(2):
        assert main([*other_args, "allow_partial=true"]) == 0
        again = pd.read_csv(tmp_path / "annealing.csv", dtype={"signature": str}).set_index("signature")
        assert again.loc["01dpr0t0c0", "status"] == "SUPERSEDED" and again.loc[s0, "status"] == "missing"
    table = pd.read_csv(tmp_path / "annealing.csv", dtype=str, keep_default_na=False)
    table = table[table["signature"] != s0]
    table.loc[table["signature"] == "01dpr0t0c0", "signature"] = s0
    table.to_csv(tmp_path / "annealing.csv", index=False)
    assert main(other_args) == 0
    assert pd.read_csv(tmp_path / "annealing.csv", dtype={"signature": str}).set_index("signature").loc[
        s0, "status"] == "FINISHED"


def test_collect_stops_when_a_default_changed_under_a_signature(store, tmp_path, capsys):
    from analysis.collect import expected, main

    uri, client = store
    for _, cfg, sig in expected("schedule", "cpu"):
        log_run(client, cfg, sig, **{"quant.beta": 0.5})  # logged with another science than resolved now
    assert main(["grid=schedule", f"tracking_uri={uri}", f"results={tmp_path}", "allow_partial=true"]) == 2
    assert "quant.beta=0.5" in capsys.readouterr().err


def test_collect_rejects_unknown_arguments_and_grids(capsys):
    from analysis.collect import main

    assert main(["grid=nope"]) == 2 and "unknown grid 'nope'" in capsys.readouterr().err
    assert main(["gird=annealing"]) == 2 and "unknown key 'gird' (did you mean grid?)" in capsys.readouterr().err
    assert main(["grid=depth", "tracking_uri=sqlite:////nonexistent/mlflow.db"]) == 2
    err = capsys.readouterr().err  # the tracking check names the missing folder before collect looks for the file
    assert ("no MLflow store at" in err or "does not exist" in err) and err.count("\n") == 1


@pytest.mark.parametrize("column, value", [("rfid", "banana"), ("usage", "-7"), ("usage", "1.5")])
def test_bad_csv_values_fail_in_one_line_naming_file_and_row(column, value, results, tmp_path, capsys,
                                                            monkeypatch):
    import pandas as pd

    import analysis.build

    # two artefacts stand for all (every artefact builds from these CSVs in the test above)
    monkeypatch.setattr(analysis.build, "TABLES", ("tab1_reconstruction",))
    monkeypatch.setattr(analysis.build, "FIGURES", ("fig6_ablations",))
    path = results / "patch_size.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    figures = tmp_path / "f"
    build_all(results, tmp_path / "t", figures)  # a good build first: its fig6 must not survive the bad one
    assert (figures / "fig6_ablations.png").exists()
    capsys.readouterr()
    df.loc[1, column] = value
    df.to_csv(path, index=False)
    report = build_all(results, tmp_path / "t", figures)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("fig6_ablations"))
    assert report["fig6_ablations"][0].startswith("FAILED")
    shown = repr(value) if column == "rfid" else value
    assert f"{path}: row 3: column {column}={shown} is not a number" in line
    assert not any(figures.glob("fig6_ablations.*")) and not any(figures.glob(".fig6_ablations*"))


def test_unreadable_csv_names_the_file(results, tmp_path, capsys):
    from analysis.rows import ResultsError, results as read_results

    (results / "patch_size.csv").write_text("")
    with pytest.raises(ResultsError, match="patch_size.csv: unreadable CSV"):
        read_results(results, "patch_size")


def fake_generator_run(client, run_dir, i, png=b"png"):
    """A finished generator run as sweeps/generation.py leaves it (run dir files + an MLflow run), made up."""
    os.makedirs(run_dir)
    run = client.create_run(client.get_experiment_by_name("fvq").experiment_id, tags={"commit": "abc123"})
    (Path(run_dir) / "mlflow.json").write_text(json.dumps({"run_id": run.info.run_id}))
    (Path(run_dir) / "status.json").write_text(json.dumps({"state": "FINISHED"}))
    (Path(run_dir) / "final.json").write_text(json.dumps(
        {"metrics": {"gfid": 300.0 + i, "noise_gfid": 75.0, "precision": 0.0, "recall": 0.5, "gen_samples": 128},
         "missing": {"is": "no logits"},
         **({"time": {"train_s": 60.0, "train_cpu_s": 55.0, "eval_s": 9.0, "eval_cpu_s": 8.0}} if i else {})}))
    (Path(run_dir) / "samples.png").write_bytes(png)
    if i:  # a generator's environment.json (fvq/core/environment.py); none for runs from before it was kept
        (Path(run_dir) / "environment.json").write_text(json.dumps([{"attempt": 1, "step": 0, "isa": "AVX512"}]))
    return run.info.run_id


@needs_fashion_mnist
def test_collect_generation_reads_the_grids_generator_runs(store, tmp_path, capsys):
    """The generator runs the grid expects (2 tokenizers x 2 seeds), as sweeps/generation.py leaves them
    (run dir files + an MLflow run); what they hold is made up here: the plumbing is tested, not gFID."""
    import pandas as pd

    from analysis.collect import main
    from sweeps.generation import plan_generation
    from sweeps.options import Options

    uri, client = store
    runs = tmp_path / "runs"
    plans = plan_generation(Options(grid="generation", runs_dir=str(runs), tracking_uri=uri, seeds=(0, 1)), {}, {})
    assert len(plans) == 4
    argv = ["grid=generation", "seeds=2", f"runs_dir={runs}", f"tracking_uri={uri}", f"results={tmp_path / 'r'}"]
    assert main(argv) == 2 and "4 of 4 generator runs not finished" in capsys.readouterr().err
    for i, p in enumerate(plans[:3]):
        fake_generator_run(client, p.run_dir, i)
    assert main(argv) == 2 and "1 of 4" in capsys.readouterr().err  # nothing written over a partial set
    assert main([*argv, "allow_partial=true"]) == 0
    out = capsys.readouterr().out
    assert "vq: gFID 300.50 ± 0.71 (n=2)" in out and "fvq: gFID 302.00 (n=1)" in out
    df = pd.read_csv(tmp_path / "r" / "generation_cpu.csv")
    assert list(df["status"]) == ["FINISHED"] * 3 + ["MISSING"] and list(df["ar_seed"]) == [0, 1, 0, 1]
    assert set(df["commit"].dropna()) == {"abc123"} and df["run_id"].notna().sum() == 3
    assert list(df["train_cpu_s"].fillna(-1)) == [-1, 55.0, 55.0, -1]  # empty: a run from before the time was kept
    assert list(df["env.isa"].fillna("")) == ["", "AVX512", "AVX512", ""]  # the run's environment.json, where kept
    assert (tmp_path / "r" / "samples" / f"{plans[0].run_dir.split('/')[-1]}.png").exists()
    # the overrides a launch took name its own runs (none of them made here); an unknown one is refused
    longer = plan_generation(Options(grid="generation", runs_dir=str(runs), tracking_uri=uri, seeds=(0, 1)), {},
                             {"steps": "600"})
    assert not {p.run_dir for p in longer} & {p.run_dir for p in plans}
    fresh = [*argv[:-1], f"results={tmp_path / 'r600'}"]  # (r/ records other runs of those replicates)
    assert main([*fresh, "ar.steps=600"]) == 2 and "4 of 4 generator runs not finished" in capsys.readouterr().err
    assert main([*argv, "ar.stepz=600"]) == 2 and "unknown AR override 'stepz'" in capsys.readouterr().err
    assert main([*argv, "calibration=true", "ar.steps=600"]) == 2
    assert "give no overrides (ar.steps)" in capsys.readouterr().err


@needs_fashion_mnist
def test_collect_generation_keeps_what_another_store_recorded(store, tmp_path, capsys):
    """A store from another machine (or a second run of a signature) never costs a recorded row its run id,
    values or sample image; rows of seeds this collect does not plan stay; a recorded row of a planned
    replicate under another generator is refused, the CSV untouched."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from analysis.collect import main
    from sweeps.generation import plan_generation
    from sweeps.options import Options

    uri, client = store
    runs, res = tmp_path / "runs", tmp_path / "r"
    plans = plan_generation(Options(grid="generation", runs_dir=str(runs), tracking_uri=uri, seeds=(0, 1)), {}, {})
    ids = [fake_generator_run(client, p.run_dir, i) for i, p in enumerate(plans)]
    argv = ["grid=generation", "seeds=2", f"tracking_uri={uri}", f"results={res}"]
    assert main([*argv, f"runs_dir={runs}"]) == 0
    first = (res / "generation_cpu.csv").read_text()

    other = MlflowClient(uri2 := f"sqlite:///{tmp_path}/other.db")
    other.create_experiment("fvq", artifact_location=f"file://{tmp_path}/other-artifacts")
    runs2 = tmp_path / "runs2"
    plans2 = plan_generation(Options(grid="generation", runs_dir=str(runs2), tracking_uri=uri2, seeds=(0, 1)), {}, {})
    second = fake_generator_run(other, plans2[0].run_dir, 9, png=b"second")  # a second run of plans[0]
    argv2 = ["grid=generation", f"tracking_uri={uri2}", f"results={res}", f"runs_dir={runs2}"]
    assert main([*argv2, "seeds=2"]) == 0  # 4 finished: 4 kept, none a gap
    out, err = capsys.readouterr()
    assert "4/4 generator runs finished" in out and "(4 kept from the CSV already there)" in out
    assert f"kept the recorded run {ids[0]}; the store's run {second} is a second run" in err
    df = pd.read_csv(res / "generation_cpu.csv", dtype={"run_id": str})
    assert list(df["run_id"]) == ids and list(df["gfid"]) == [300.0, 301.0, 302.0, 303.0]
    assert (res / "samples" / f"gen-{plans[0].sig}.png").read_bytes() == b"png"
    assert main([*argv2, "seeds=1"]) == 0  # seed 0 planned, seed 1 recorded: both stay, in plan order
    assert list(pd.read_csv(res / "generation_cpu.csv", dtype={"run_id": str})["run_id"]) == ids

    before = (res / "generation_cpu.csv").read_text()
    assert main([*argv2, "seeds=2", "ar.steps=600", "allow_partial=true"]) == 2
    err = capsys.readouterr().err
    assert f"records gen-{plans[0].sig} (GPT-{plans[0].cfg.model}) for tokenizer {plans[0].tok.sig} seed 0, " \
           f"which this collect plans as gen-" in err and "another results= directory" in err
    assert (res / "generation_cpu.csv").read_text() == before
    assert first.splitlines()[0] == before.splitlines()[0]


def test_collect_calibration_writes_each_logged_validation_loss(store, tmp_path, capsys):
    """calibration=true: one row per logged held-out AR loss of every generator run that has one, with its
    model size, run id and commit; runs without ar.val_images are not calibration runs."""
    import pandas as pd

    from analysis.collect import main

    uri, client = store
    runs = tmp_path / "runs"
    tok = runs / "tok0"
    tok.mkdir(parents=True)
    (tok / "config.json").write_text(json.dumps({"quant.projector": "vqbridge"}))
    for name, val in (("gen-a", 8), ("gen-b", 0)):
        d = runs / name
        d.mkdir()
        run = client.create_run(client.get_experiment_by_name("fvq").experiment_id, tags={"commit": "abc123"})
        (d / "mlflow.json").write_text(json.dumps({"run_id": run.info.run_id}))
        (d / "final.json").write_text(json.dumps({"params": 1234, "config": {
            "val_images": val, "tokenizer": str(tok), "model": "S", "steps": 4}}))
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "ar/loss": 5.0 - s, **(
            {"ar/val_loss": 5.5 - s} if val else {})}) + "\n" for s in (2, 4)))
    argv = ["grid=generation", "calibration=true", f"runs_dir={runs}", f"tracking_uri={uri}", f"results={tmp_path / 'r'}"]
    assert main(argv) == 0
    assert "fvq GPT-S (1234 params): val loss 1.5000 at step 4" in capsys.readouterr().out
    df = pd.read_csv(tmp_path / "r" / "generation_calibration.csv")
    assert list(df["step"]) == [2, 4] and set(df["signature"]) == {"gen-a"} and set(df["commit"]) == {"abc123"}
    # another store's calibration run joins them; the recorded run, absent from that store, stays as recorded
    shutil.copytree(runs / "gen-a", runs / "gen-c")
    shutil.rmtree(runs / "gen-a")
    assert main(argv) == 0 and "2 generator runs" in capsys.readouterr().out
    again = pd.read_csv(tmp_path / "r" / "generation_calibration.csv")
    assert list(again["signature"]) == ["gen-a", "gen-a", "gen-c", "gen-c"]
    assert again[again["signature"] == "gen-a"].drop(columns=[]).equals(df)
    assert main(["grid=depth", *argv[1:]]) == 2
    assert "calibration=true collects generator runs" in capsys.readouterr().err


def test_collect_takes_a_shared_point_from_the_grid_csv_that_records_it(results, tmp_path, capsys):
    """The reference point's run, recorded in other grids' CSVs from another store, fills this grid's row (same
    signature = same run: run id, commit and curves unchanged), not a gap, not a run to train again."""
    import pandas as pd

    from analysis.collect import main

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/empty.db"  # a store that holds none of these runs
    MlflowClient(uri).create_experiment("fvq", artifact_location=f"file://{tmp_path}/artifacts")
    ref = pd.read_csv(results / "codebook_size.csv", dtype=str).set_index("signature").loc["bf21a9e8fb"]
    assert main(["grid=annealing", f"tracking_uri={uri}", f"results={results}", "allow_partial=true"]) == 0
    assert "2/2 runs finished" in (out := capsys.readouterr().out) and "(2 recorded in other grids' CSVs)" in out
    df = pd.read_csv(results / "annealing.csv", dtype=str).set_index("signature")
    row = df.loc["bf21a9e8fb"]
    assert (row["grid"], row["status"], row["run_id"], row["commit"]) == ("annealing", "FINISHED", ref["run_id"],
                                                                           ref["commit"])
    assert set(df["status"]) == {"FINISHED"} and set(df["grid"]) == {"annealing"}
    curves = pd.read_csv(results / "annealing_curves.csv", dtype=str)
    assert len(curves[curves["signature"] == "bf21a9e8fb"]) == 35 and set(curves["grid"]) == {"annealing"}
