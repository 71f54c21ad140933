"""``python -m analysis.collect grid=generation [seeds=3]``: generator runs -> results/generation_cpu.csv.

The generation grid is re-planned (sweeps/generation.py, with the launch's overrides) to the generator run
dirs it should have, one per tokenizer point and seed; each row is read from the run dir (``final.json``:
gFID, its real-vs-real noise, precision, recall, the reasons for what is missing) and its MLflow run
(``mlflow.json`` -> run id, the launch's ``commit`` tag). A missing or unfinished generator is a one-line
error unless ``allow_partial=true`` (then its row carries the status and no metrics). A finished row already
in the CSV stays as recorded where this store has not finished that run (a store from another machine), so a
collect never costs a recorded run (``keep_generation_rows``; the calibration CSV likewise). Each run's sample grid
goes to results/samples/<run dir>.png (Fig. 5 right). The CSV's columns are those Tables 2 / 11 and
Figs. 1 (d) / 5 read, plus ``signature``, ``run_id`` and ``status``, ``trained_in`` / ``trained_commit`` (the
run and commit that trained the weights where the run took them, fvq/generation/shared.py; empty otherwise),
``train_s`` / ``train_cpu_s`` / ``eval_s`` / ``eval_cpu_s`` (wall and CPU seconds of the run's own training, over
all its attempts up to their last checkpoints, 0 where it took the weights, and of its evaluation; empty for a
run from before they were kept), then the other guidance scales'
metrics, then gFID's metric card (``final.json`` ``gfid_card``, fvq/generation/ar.py): ``gfid_<field>`` per
``CARD`` field, empty for a run without one, then the machine and kernels of the run (``env.*``, its
``environment.json``, as the tokenizer grids' CSVs; empty for a run from before generators kept it).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from analysis.cells import values_mean_sd
from analysis.rows import read_csv
from fvq.core import environment
from fvq.core.environment import COLUMNS as ENV_COLUMNS
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
    client, rows, images = MlflowClient(uri), [], {}
    for p in plans:
        final = read_json(os.path.join(p.run_dir, "final.json")) if p.state == "finished" else {}
        m, missing = final.get("metrics", {}), final.get("missing", {})
        run_id = read_json(os.path.join(p.run_dir, "mlflow.json")).get("run_id", "")
        commit = client.get_run(run_id).data.tags.get("commit", "") if run_id else ""
        src = final.get("config", {}).get("init_from", "")  # weights trained by another run (fvq/generation/shared.py)
        src_id = read_json(os.path.join(src, "mlflow.json")).get("run_id", "") if src else ""
        attempts = environment.read(p.run_dir) if final else []
        env = environment.tags(attempts) if attempts else {}  # "" = a run from before generators kept it
        if final and os.path.exists(os.path.join(p.run_dir, "samples.png")):
            images[f"gen-{p.sig}"] = os.path.join(p.run_dir, "samples.png")
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
                     **{f"gfid_{k}": final.get("gfid_card", {}).get(k) for k in CARD},
                     **{c: env.get(c, "") for c in ENV_COLUMNS}})
    rows, kept = keep_generation_rows(results / "generation_cpu.csv", rows)
    gaps = [f"{r['signature']}: {str(r['status']).lower()}" for r in rows if r["status"] != "FINISHED"]
    if gaps and not allow_partial:
        raise GenerationCollectError(f"generation: {len(gaps)} of {len(rows)} generator runs not finished "
                                     f"({', '.join(gaps)}); launch them or pass allow_partial=true")
    (results / "samples").mkdir(parents=True, exist_ok=True)
    for sig, png in images.items():
        if sig not in kept:  # a kept row keeps the sample image recorded with it
            shutil.copy(png, results / "samples" / f"{sig}.png")
    columns = list(dict.fromkeys([*COLUMNS, *(k for r in rows for k in r)]))
    df = pd.DataFrame(rows, columns=columns)
    tmp = results / ".generation_cpu.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, results / "generation_cpu.csv")
    lines = [f"generation: {len(rows) - len(gaps)}/{len(rows)} generator runs finished -> "
             f"{results / 'generation_cpu.csv'}" + (f" ({len(kept)} kept from the CSV already there)" if kept else "")
             + (f" (gaps: {', '.join(gaps)})" if gaps else "")]
    for tok, g in df.groupby("tokenizer", sort=False):
        v = pd.to_numeric(g["gfid"], errors="coerce").dropna()
        lines.append(f"  {tok}: gFID {values_mean_sd(v, 'gfid')}" if len(v) else f"  {tok}: no gFID")
    return "\n".join(lines)


def recorded(old: pd.DataFrame, store: dict[str, str], what: str) -> tuple[list[dict], set[str]]:
    """Nothing recorded is lost (as analysis/collect.py keep_recorded for the tokenizer grids): the rows of
    ``old`` (a CSV already in results/) to keep, and their signatures: every signature this store has not
    finished under the recorded run id (``store``: signature -> the run id this store has for it). That is a store
    from another machine, or a second run of the signature (said on stderr: the recorded run keeps its rows)."""
    keep, sigs = [], set()
    for sig, g in old.groupby("signature", sort=False):
        mine = store.get(sig)
        if mine and mine == g["run_id"].iloc[0]:
            continue
        if mine:
            print(f"[collect] {what} {sig}: kept the recorded run {g['run_id'].iloc[0]}; the store's run {mine} "
                  f"is a second run of that signature", file=sys.stderr)
        keep += g.to_dict("records")  # empty cells too: the recorded columns stay
        sigs.add(sig)
    return keep, sigs


def keep_generation_rows(path: Path, rows: list[dict]) -> tuple[list[dict], set[str]]:
    """The plan's rows with the recorded finished rows of ``path`` kept in (``recorded``), those of replicates
    this collect does not plan (another seed) too; a recorded row of a replicate (tokenizer and seed) the plan
    names under another signature (another generator) is refused, as two generators of one replicate in one
    CSV would be read as two seeds: collect those into another results= directory."""
    if not path.exists():
        return rows, set()
    old = read_csv(path, ("signature", "status", "run_id", "tokenizer", "tokenizer_signature", "ar_seed",
                          "ar_model"), ("signature",))
    keep, sigs = recorded(old[old["status"] == "FINISHED"],
                          {r["signature"]: r["run_id"] for r in rows if r["status"] == "FINISHED"}, "generation")
    planned = {(r["tokenizer_signature"], int(r["ar_seed"])): r["signature"] for r in rows}
    for r in keep:
        other = planned.get((r["tokenizer_signature"], int(r["ar_seed"])), r["signature"])
        if other != r["signature"]:
            raise GenerationCollectError(
                f"{path} records {r['signature']} (GPT-{r['ar_model']}) for tokenizer {r['tokenizer_signature']} "
                f"seed {int(r['ar_seed'])}, which this collect plans as {other}: collect into another results= "
                f"directory, or give the overrides of the launch that made it")
    rank = {t: i for i, t in enumerate(dict.fromkeys(r["tokenizer"] for r in [*rows, *keep]))}
    rows = [r for r in rows if r["signature"] not in sigs] + keep
    return sorted(rows, key=lambda r: (rank[r["tokenizer"]], int(r["ar_seed"]))), sigs


def collect_calibration(uri: str, runs_dir: Path, results: Path) -> str:
    """Every generator run of ``runs_dir`` that logged a validation loss (``ar.val_images``) -> one row per
    logged step in results/generation_calibration.csv, beside the rows already recorded there from other
    stores: held-out AR loss against model size and steps, the evidence the cpu benchmark's generator
    (sweeps/generation.py ``CPU_AR``) is sized by."""
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
    path = results / "generation_calibration.csv"
    if path.exists():  # runs of other stores' calibrations stay (``recorded``)
        keep, sigs = recorded(read_csv(path, ("signature", "step", "run_id"), ("signature", "step")),
                              {r["signature"]: r["run_id"] for r in rows}, "calibration")
        rows = sorted([r for r in rows if r["signature"] not in sigs] + keep,
                      key=lambda r: (r["signature"], int(r["step"])))
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
