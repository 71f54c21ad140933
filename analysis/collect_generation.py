"""``python -m analysis.collect grid=generation [seeds=3]``: generator runs -> results/generation_cpu.csv.

The generation grid is re-planned (sweeps/generation.py, with the launch's overrides) to the generator run
dirs it should have, one per tokenizer point and seed; each row is read from the run dir (``final.json``:
gFID, its real-vs-real noise, precision, recall, the reasons for what is missing) and its MLflow run
(``mlflow.json`` -> run id, the launch's ``commit`` tag). A missing or unfinished generator is a one-line
error unless ``allow_partial=true`` (then its row carries the status and no metrics). Each run's sample grid
goes to results/samples/<run dir>.png (Fig. 5 right). The CSV's columns are those Tables 2 / 11 and
Figs. 1 (d) / 5 read, plus ``signature``, ``run_id`` and ``status``, ``trained_in`` / ``trained_commit`` (the
run and commit that trained the weights where the run took them, fvq/generation/shared.py; empty otherwise),
``train_s`` / ``train_cpu_s`` / ``eval_s`` / ``eval_cpu_s`` (wall and CPU seconds of the run's own training, over
all its attempts up to their last checkpoints, 0 where it took the weights, and of its evaluation; empty for a
run from before they were kept), then the other guidance scales'
metrics, then gFID's metric card (``final.json`` ``gfid_card``, fvq/generation/ar.py): ``gfid_<field>`` per
``CARD`` field, empty for a run without one.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from analysis.cells import values_mean_sd
from fvq.core.errors import SetupError
from fvq.core.rundir import read_json
from fvq.eval.card import CARD_KEYS

COLUMNS = ("tokenizer", "tokenizer_signature", "tokenizer_seed", "ar_model", "ar_seed", "cfg_scale", "gfid",
           "noise_gfid", "precision", "recall", "is", "is_missing", "samples", "run_dir", "commit", "signature",
           "run_id", "status", "trained_in", "trained_commit", "train_s", "train_cpu_s", "eval_s", "eval_cpu_s")
# gFID's metric card as columns: fid_card's shared fields, then the generator's own (fvq/generation/ar.py)
CARD = (*CARD_KEYS, "cfg_scale", "cfg_sweep", "seed")
CALIBRATION = ("tokenizer", "tokenizer_signature", "ar_model", "ar_params", "ar_steps", "step", "train_loss",
               "val_loss", "val_images", "run_dir", "commit", "signature", "run_id")


class GenerationCollectError(SetupError, RuntimeError):
    pass


def collect_generation(scale: str, uri: str, runs_dir: Path, results: Path, allow_partial: bool,
                       seeds: tuple[int, ...], launch: dict[str, str] | None = None) -> str:
    """``launch``: the ``key=value`` overrides the launch took (``ar.KEY`` for the generator, the rest for the
    tokenizer points), so the plan names that launch's runs."""
    from mlflow.tracking import MlflowClient

    from fvq.generation.ar import sweep as ar_sweep
    from sweeps.generation import plan_generation
    from sweeps.options import Options

    opts = Options(grid="generation", scale=scale, runs_dir=str(runs_dir.resolve()), tracking_uri=uri, seeds=seeds)
    launch = dict(launch or {})
    ar = {k[3:]: launch.pop(k) for k in list(launch) if k.startswith("ar.")}
    plans = plan_generation(opts, launch, ar)
    gaps = [f"gen-{p.sig}: {p.state}" for p in plans if p.state != "finished"]
    if gaps and not allow_partial:
        raise GenerationCollectError(f"generation: {len(gaps)} of {len(plans)} generator runs not finished "
                                     f"({', '.join(gaps)}); launch them or pass allow_partial=true")
    client, rows = MlflowClient(uri), []
    (results / "samples").mkdir(parents=True, exist_ok=True)
    for p in plans:
        final = read_json(os.path.join(p.run_dir, "final.json")) if p.state == "finished" else {}
        m, missing = final.get("metrics", {}), final.get("missing", {})
        run_id = read_json(os.path.join(p.run_dir, "mlflow.json")).get("run_id", "")
        commit = client.get_run(run_id).data.tags.get("commit", "") if run_id else ""
        src = final.get("config", {}).get("init_from", "")  # weights trained by another run (fvq/generation/shared.py)
        src_id = read_json(os.path.join(src, "mlflow.json")).get("run_id", "") if src else ""
        if final and os.path.exists(os.path.join(p.run_dir, "samples.png")):
            shutil.copy(os.path.join(p.run_dir, "samples.png"), results / "samples" / f"gen-{p.sig}.png")
        sweep = {f"{k}_cfg{c:g}": m.get(f"{k}_cfg{c:g}") for c in ar_sweep(p.cfg)
                 for k in ("gfid", "precision", "recall")}  # the other guidance scales of the same generator
        rows.append({"tokenizer": p.tok_name, "tokenizer_signature": p.tok.sig, "tokenizer_seed": p.tok.cfg.seed,
                     "ar_model": p.cfg.model, **sweep,
                     "ar_seed": p.cfg.seed, "cfg_scale": p.cfg.cfg_scale, "gfid": m.get("gfid"),
                     "noise_gfid": m.get("noise_gfid"), "precision": m.get("precision"),
                     "recall": m.get("recall"), "is": m.get("is"), "is_missing": missing.get("is", ""),
                     "samples": m.get("gen_samples"), "run_dir": f"runs/gen-{p.sig}", "commit": commit,
                     "signature": f"gen-{p.sig}", "run_id": run_id, "status": p.state.upper(),
                     "trained_in": os.path.basename(src),
                     "trained_commit": client.get_run(src_id).data.tags.get("commit", "") if src_id else "",
                     **{k: final.get("time", {}).get(k) for k in ("train_s", "train_cpu_s", "eval_s", "eval_cpu_s")},
                     **{f"gfid_{k}": final.get("gfid_card", {}).get(k) for k in CARD}})
    df = pd.DataFrame(rows, columns=list(COLUMNS) + [k for k in rows[0] if k not in COLUMNS] if rows else COLUMNS)
    tmp = results / ".generation_cpu.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, results / "generation_cpu.csv")
    lines = [f"generation: {len(plans) - len(gaps)}/{len(plans)} generator runs finished -> "
             f"{results / 'generation_cpu.csv'}" + (f" (gaps: {', '.join(gaps)})" if gaps else "")]
    for tok, g in df.groupby("tokenizer", sort=False):
        v = pd.to_numeric(g["gfid"], errors="coerce").dropna()
        lines.append(f"  {tok}: gFID {values_mean_sd(v, 'gfid')}" if len(v) else f"  {tok}: no gFID")
    return "\n".join(lines)


def collect_calibration(uri: str, runs_dir: Path, results: Path) -> str:
    """Every generator run of ``runs_dir`` that logged a validation loss (``ar.val_images``) -> one row per
    logged step in results/generation_calibration.csv: held-out AR loss against model size and steps, the
    evidence the cpu benchmark's generator (sweeps/generation.py ``CPU_AR``) is sized by."""
    from mlflow.tracking import MlflowClient

    from fvq.core.track import read_jsonl

    client, rows = MlflowClient(uri), []
    for d in sorted(runs_dir.glob("gen-*")):
        final = read_json(str(d / "final.json"))
        cfg = final.get("config", {})
        if not cfg.get("val_images"):
            continue
        tok_dir = Path(cfg["tokenizer"])
        kind = read_json(str(tok_dir / "config.json")).get("quant.projector", "")
        params = final.get("params", "")
        run_id = read_json(str(d / "mlflow.json")).get("run_id", "")
        commit = client.get_run(run_id).data.tags.get("commit", "") if run_id else ""
        for r in read_jsonl(str(d / "metrics.jsonl")):
            if "ar/val_loss" in r:
                rows.append({"tokenizer": "vq" if kind == "none" else "fvq", "tokenizer_signature": tok_dir.name,
                             "ar_model": cfg["model"], "ar_params": params, "ar_steps": cfg["steps"],
                             "step": r["step"], "train_loss": r.get("ar/loss"), "val_loss": r["ar/val_loss"],
                             "val_images": cfg["val_images"], "run_dir": f"runs/{d.name}", "commit": commit,
                             "signature": d.name, "run_id": run_id})
    if not rows:
        raise GenerationCollectError(f"no generator run in {runs_dir} logged a validation loss (ar.val_images=)")
    df = pd.DataFrame(rows, columns=list(CALIBRATION))
    results.mkdir(parents=True, exist_ok=True)
    tmp = results / ".generation_calibration.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, results / "generation_calibration.csv")
    last = df.sort_values("step").groupby(["tokenizer", "ar_model"]).tail(1)
    return "\n".join([f"calibration: {len(rows)} rows from {df['signature'].nunique()} generator runs -> "
                      f"{results / 'generation_calibration.csv'}"]
                     + [f"  {r.tokenizer} GPT-{r.ar_model} ({r.ar_params} params): val loss {r.val_loss:.4f} "
                        f"at step {r.step}" for r in last.itertuples()])
