"""MLflow -> results/<grid>.csv and results/<grid>_curves.csv: the only input of tables and figures.

    python -m analysis.collect grid=projector                       # cpu scale, local sqlite store
    python -m analysis.collect grid=all scale=paper tracking_uri=http://127.0.0.1:5000
    python -m analysis.collect grid=patch_size allow_partial=true    # write the gaps instead of failing
    python -m analysis.collect grid=projector seeds=3               # the runs of a seeds=3 launch
    python -m analysis.collect grid=generation seeds=3              # generator runs (analysis/collect_generation.py)
    python -m analysis.collect grid=generation calibration=true     # the generator size calibration
    python -m analysis.collect grid=generation ar.steps=6000        # a launch with overrides: the same ones

The grid is re-expanded to the signatures it should have (sweeps.scale.resolve + sweeps.identity.signature),
so a run that was never launched is a visible gap, not a silently shorter table. Each signature's run is
the newest FINISHED MLflow run tagged with it. A grid with a missing or unfinished run is a one-line error
and exit 2, unless allow_partial=true, which writes that row with its status and empty metrics.
A point the store has no finished run of, whose run another grid's CSV in the results dir records (a point
shared between grids, run in another store), takes that row unchanged (run id, commit, curves).
A run whose logged params disagree with the freshly resolved config is always an error (a default changed
under the same signature; see sweeps/identity.py). recon.png of each run goes to results/recon/<sig>.png.
With ``seeds=`` (as given to sweeps/run.py) every point is expected once per seed: one row per run with
its ``seed``; tables and figures aggregate a point's seeds as mean +- sd (n) (analysis/aggregate.py
aggregate), and the command prints that summary per point. ``grid=generation`` takes the ``ar.KEY`` and
config overrides its launch took (sweeps/run.py), so the plan re-expands to that launch's generator runs.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.rows import CURVES, METRICS, REPO, RESULTS, SWEPT, point_signature
from fvq.core.config import Config, science_mismatch, to_flat_dict
from fvq.core.environment import COLUMNS as ENV
from fvq.core.errors import SetupError, one_line
from fvq.core.keyvalue import fields_of, split, typed, unknown
from sweeps.options import Seeds

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per grid, no bars


@dataclass(frozen=True)
class Args:
    grid: str = ""               # a grid of sweeps/grids/, generation, or all
    scale: str = "cpu"
    tracking_uri: str = ""       # "" = the local sqlite store
    runs_dir: str = str(REPO / "runs")
    experiment: str = ""
    allow_partial: bool = False  # write a grid with points not run yet (shown as gaps)
    results: str = str(RESULTS)
    seeds: Seeds = ()            # the seed axis the grid was launched with (N or a list)
    calibration: bool = False    # grid=generation: the generator runs with a validation loss -> calibration CSV


BASE = ("grid", "signature", "run_id", "commit", "scale", "status", "source", "point", "paper_signature", "seed")


class CollectError(SetupError, RuntimeError):
    """One line: why a grid cannot be written."""


def expected(grid: str, scale: str, seeds: tuple[int, ...] = ()) -> list[tuple[dict, Config, str]]:
    """(paper-terms point, resolved Config, signature) of every distinct run the grid should have (once per
    seed of ``seeds``; none = the config's seed, as sweeps/run.py without seeds=)."""
    from sweeps import grids
    from sweeps.identity import signature
    from sweeps.scale import resolve

    out: dict[str, tuple] = {}
    for point in grids.load(grid).points():
        for seed in seeds or (None,):
            cfg = resolve(point, scale, None if seed is None else {"seed": seed})
            out.setdefault(signature(cfg), (point, cfg))
    return [(p, c, s) for s, (p, c) in out.items()]


def find_run(client, experiment_ids: list[str], sig: str):
    """Newest FINISHED run tagged ``signature=sig``; else the newest run of any status; else None."""
    runs = client.search_runs(experiment_ids, f"tags.signature = '{sig}'", order_by=["attributes.start_time DESC"])
    return next((r for r in runs if r.info.status == "FINISHED"), runs[0] if runs else None)


def check_params(run, cfg: Config, sig: str) -> None:
    logged = run.data.params
    bad = science_mismatch(logged, to_flat_dict(cfg), as_text=True)
    if bad:
        raise CollectError(f"run {sig} ({run.info.run_id}) was logged with {bad[0]}={logged[bad[0]]} but the grid "
                           f"now resolves {bad[0]}={to_flat_dict(cfg)[bad[0]]}: a default changed under the same "
                           f"signature (sweeps/identity.py)")


def collect(grid: str, scale: str, uri: str, runs_dir: Path, results_dir: Path, allow_partial: bool,
            experiment: str = "", seeds: tuple[int, ...] = ()) -> str:
    """Write the grid's two CSVs; return a one-line summary. Raises CollectError on a partial grid."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments() if not experiment or e.name == experiment]
    rows, curves, gaps, finished = [], [], [], []
    for point, cfg, sig in expected(grid, scale, seeds):
        run = find_run(client, exps, sig) if exps else None
        # a pruned search trial is KILLED in MLflow with the tag state=PRUNED (fvq/train.py)
        status = (run.data.tags.get("state") or run.info.status) if run else "missing"
        flat = to_flat_dict(cfg)
        row = {"grid": grid, "signature": sig, "run_id": run.info.run_id if run else "",
               "commit": run.data.tags.get("commit", "") if run else "", "scale": scale, "status": status,
               "source": "harness", "point": json.dumps(point, sort_keys=True),
               "paper_signature": point_signature(point), "seed": cfg.seed, **{k: flat[k] for k in SWEPT}}
        if status != "FINISHED":
            gaps.append(f"{sig}: {status.lower()}")
            rows.append(row)
            continue
        check_params(run, cfg, sig)
        evals = {k.split("/", 1)[1]: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
        row.update({m: evals.pop(m, None) for m in METRICS})
        row.update(evals)  # metrics fvq/eval/evaluate.py added since: kept, not dropped
        row["missing"] = "; ".join(f"{k[8:]}: {v}" for k, v in sorted(run.data.tags.items())
                                   if k.startswith("missing."))
        row.update({c: run.data.tags.get(c, "") for c in ENV})  # "" = a run from before the record
        rows.append(row)
        for key in CURVES:
            curves += [{"grid": grid, "signature": sig, "step": m.step, "metric": key, "value": m.value}
                       for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        row.update(train_window(curves, sig, cfg))
        finished.append((run.info.run_id, sig))
    rows, curves, kept = keep_recorded(results_dir, grid, rows, curves)
    rows, curves, shared = from_other_grids(results_dir, grid, rows, curves)
    gaps = [f"{r['signature']}: {str(r['status']).lower()}" for r in rows
            if r["status"] not in ("FINISHED", "SUPERSEDED")]
    if gaps and not allow_partial:
        raise CollectError(f"grid {grid} (scale={scale}): {len(gaps)} of {len(rows)} runs not finished "
                           f"({', '.join(gaps)}); run `python sweeps/run.py grid={grid} scale={scale}` "
                           f"or pass allow_partial=true")
    results_dir.mkdir(parents=True, exist_ok=True)
    for run_id, sig in finished:
        copy_recon(client, run_id, runs_dir / sig, results_dir / "recon" / f"{sig}.png")
    table = pd.DataFrame(rows)
    base = [*BASE, *SWEPT]
    extra = sorted(set(table.columns) - set(base) - set(METRICS) - {"missing", *ENV})
    table = table.reindex(columns=[*base, *METRICS, *extra, "missing", *ENV])  # fixed order, gaps as empty cells
    table.to_csv(results_dir / f"{grid}.csv", index=False)
    pd.DataFrame(curves, columns=["grid", "signature", "step", "metric", "value"]).to_csv(
        results_dir / f"{grid}_curves.csv", index=False)
    return (f"{grid}: {len(rows) - len(gaps)}/{len(rows)} runs finished -> {results_dir / grid}.csv"
            + (f" ({kept} kept from the CSV already there)" if kept else "")
            + (f" ({shared} recorded in other grids' CSVs)" if shared else "")
            + (f" (gaps: {', '.join(gaps)})" if gaps else "") + summary(table))


def keep_recorded(results_dir: Path, grid: str, rows: list[dict], curves: list[dict]) -> tuple[list, list, int]:
    """Nothing recorded is lost: a finished row of the grid's CSV already in ``results_dir`` stays, with its
    curves, run id and commit, wherever this store has no finished run of that signature (a store from
    another machine or session) - and also where it has one, which is then a second run of the signature
    (said on stderr; the first recorded run keeps the row). Rows the grid no longer expects stay too; one
    whose point and seed the grid now resolves to another signature (a changed cpu protocol) stays with
    status SUPERSEDED, so it is seen but never counted beside the run that replaced it, collect after collect."""
    from analysis.rows import curves as read_curves, results as read_results

    old = read_results(results_dir, grid)  # a duplicated row or a missing column: refused, not merged
    if old is None:
        return rows, curves, 0
    old = old[old["status"].isin(("FINISHED", "SUPERSEDED"))] if "status" in old else old
    old_curves = read_curves(results_dir, grid)
    old_curves = pd.DataFrame(columns=["signature"]) if old_curves is None else old_curves
    at = {r["signature"]: i for i, r in enumerate(rows)}
    now = {(r["paper_signature"], int(r["seed"])) for r in rows}
    kept = 0
    for _, rec in old.iterrows():
        sig, i = rec["signature"], at.get(rec["signature"])
        if i is not None and rows[i]["status"] == "FINISHED":
            if rows[i]["run_id"] != rec["run_id"]:
                print(f"[collect] {grid} {sig}: kept the recorded run {rec['run_id']}; the store's run "
                      f"{rows[i]['run_id']} is a second run of that signature", file=sys.stderr)
            else:
                continue
        row = {k: v for k, v in rec.items() if not (isinstance(v, float) and pd.isna(v))}
        if i is None:
            if (rec["paper_signature"], int(rec.get("seed", 0))) in now:
                row["status"] = "SUPERSEDED"
            rows.append(row)
        else:  # a superseded run whose signature the grid resolves to again is the point's finished run
            rows[i] = {**row, "status": "FINISHED"}
        curves = [c for c in curves if c["signature"] != sig]
        curves += old_curves[old_curves["signature"] == sig].to_dict("records")
        kept += 1
    return rows, curves, kept


def from_other_grids(results_dir: Path, grid: str, rows: list[dict], curves: list[dict]) -> tuple[list, list, int]:
    """A point this store has no finished run of, whose run another grid's CSV already records (a point
    shared between grids: the reference point, K = 262k, made in another store), takes that row - run id,
    commit and curves unchanged, under this grid's name: the signature is the run's whole config, so it is
    the same run, and it is neither trained again nor shown as a gap."""
    from analysis.rows import curves as read_curves, results as read_results
    from sweeps import grids

    want = {r["signature"]: i for i, r in enumerate(rows) if r["status"] != "FINISHED"}
    shared = 0
    for other in grids.names():
        if other == grid or not want:
            continue
        recorded = read_results(results_dir, other)
        if recorded is None or "status" not in recorded:
            continue
        hits = recorded[(recorded["status"] == "FINISHED") & recorded["signature"].isin(want)]
        other_curves = read_curves(results_dir, other) if len(hits) else None
        for _, rec in hits.iterrows():
            i = want.pop(rec["signature"])
            rows[i] = {**{k: v for k, v in rec.items() if not (isinstance(v, float) and pd.isna(v))}, "grid": grid}
            if other_curves is not None:
                mine = other_curves[other_curves["signature"] == rec["signature"]]
                curves += mine.assign(grid=grid).to_dict("records")
            shared += 1
    return rows, curves, shared


def summary(table: pd.DataFrame) -> str:
    """One line per point: PSNR and usage as mean +- sd (n) over its finished seeds."""
    from analysis.aggregate import by_point
    from analysis.cells import Notes, metric

    lines = []
    for _, row in by_point(table.assign(status=table["status"].astype(str))).iterrows():
        if row.get("status") == "FINISHED":
            notes = Notes()
            lines.append(f"  {row['point']}: psnr {metric(row, 'psnr', notes)}, usage {metric(row, 'usage', notes)}")
    return "\n" + "\n".join(lines) if lines else ""


def train_window(curves: list[dict], sig: str, cfg: Config) -> dict:
    """The last training-window usage (train/usage over log.usage_window steps) and the tokens per code that
    window counts, beside the held-out ``usage`` / ``tokens_per_code`` of the final evaluation."""
    from fvq.vq.models import get_arch

    usage = [c["value"] for c in curves if c["signature"] == sig and c["metric"] == "train/usage"]
    side = cfg.data.image_size // get_arch(cfg.model.arch).ratio
    tokens = cfg.log.usage_window * cfg.optim.batch * side * side
    return {"train_usage": usage[-1] if usage else None, "train_tokens_per_code": tokens / cfg.quant.codebook_size}


def copy_recon(client, run_id: str, run_dir: Path, dest: Path) -> None:
    """The run's input/reconstruction grid (fvq/train.py recon.png): run dir first, else MLflow artifact."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if (run_dir / "recon.png").exists():
        shutil.copyfile(run_dir / "recon.png", dest)
        return
    try:
        if any(a.path == "recon.png" for a in client.list_artifacts(run_id)):
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copyfile(client.download_artifacts(run_id, "recon.png", tmp), dest)
    except Exception as e:  # artifact store unreachable: fig5 shows the gap, say why here
        print(f"[collect] no recon.png for run {run_id}: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)


def main(argv: list[str]) -> int:
    try:
        items = split(argv)
        launch = {}  # grid=generation: the overrides its launch took (ar.KEY and config keys), as sweeps/run.py
        if dict(items).get("grid") == "generation":
            from fvq.core.config import all_keys

            known, config_keys = fields_of(Args), set(all_keys())
            for k, v in items:
                if k not in known and not (k in config_keys or k.startswith("ar.")):
                    raise unknown(k, [*known, *config_keys, "ar.KEY"])
            launch = {k: v for k, v in items if k not in known}
            items = [(k, v) for k, v in items if k in known]
        opts = typed(Args, items)
        if launch and opts.calibration:
            raise CollectError("calibration=true finds every generator run with a validation loss: give no "
                               f"overrides ({', '.join(launch)})")
        from sweeps import grids
        from sweeps.tracking import DEFAULT_URI, check_reachable

        seeds = opts.seeds
        names = grids.names() if opts.grid == "all" else [opts.grid]
        if opts.calibration and opts.grid != "generation":
            raise CollectError("calibration=true collects generator runs: give grid=generation")
        if opts.grid == "generation" and opts.scale != "cpu":
            raise CollectError("grid=generation collects scale=cpu runs (results/generation_cpu.csv)")
        for name in names:
            grids.load(name)  # an unknown grid is a one-line error listing the valid ones
        uri = opts.tracking_uri or DEFAULT_URI
        # collect only reads: a missing sqlite file is "no store here", before the launch-side URI checks
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            raise CollectError(f"no MLflow store at {uri} (no run was tracked there; pass tracking_uri=)")
        check_reachable(uri)
    except (CollectError, SetupError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from mlflow.exceptions import MlflowException

    failed = 0
    for name in names:
        try:
            if name == "generation":  # generator runs, not tokenizer configs (analysis/collect_generation.py)
                from analysis.collect_generation import collect_calibration, collect_generation

                if opts.calibration:
                    print(collect_calibration(uri, Path(opts.runs_dir), Path(opts.results)), flush=True)
                    continue
                print(collect_generation(opts.scale, uri, Path(opts.runs_dir), Path(opts.results),
                                         opts.allow_partial, seeds, launch), flush=True)
                continue
            print(collect(name, opts.scale, uri, Path(opts.runs_dir), Path(opts.results),
                          opts.allow_partial, opts.experiment, seeds),
                  flush=True)
        except (CollectError, ValueError, RuntimeError, MlflowException) as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
