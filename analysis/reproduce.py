"""Re-run committed points of a grid and say, per point and metric, whether the committed numbers reproduce.

    python -m analysis.reproduce grid=patch_size                           # every committed row of the grid
    python -m analysis.reproduce grid=patch_size points=cca3bd497b,c0a0edfd59 seeds=0
    python -m analysis.reproduce grid=depth runs_dir=/tmp/r tracking_uri=sqlite:////tmp/r/mlflow.db [key=value]

``points=`` names rows of results/<grid>.csv by their ``signature`` (one run) or ``paper_signature`` (the
point, every seed); ``seeds=`` keeps those seeds (default: every committed row). The chosen runs are
launched by the harness itself (``sweeps/run.py``, local launcher) into a scratch runs dir and MLflow store,
``reproduce/<grid>-<time>/`` unless given; the committed ``runs/``, store and ``results/`` are never
written. A runs_dir given again keeps its finished runs (the relaunch rules): only the comparison is redone.
Other ``key=value`` are config overrides handed to the launch (``threads=2``); one that changes the science
changes the signatures, and the committed rows are then not found (exit 2).

Each metric of each re-run is
- **identical**: the same float, bit for bit, as the committed run of that signature;
- **consistent**: inside the 95% prediction interval of one more seed of that point, from its committed
  seeds: mean +- t(0.975, n-1) * sd * sqrt(1 + 1/n) (n >= 2 seeds needed);
- **outside**: neither; the line names the fields in which the re-run's environment (its run dir's
  environment.json) differs from the committed row's (results CSV env.* columns; rows collected before
  those existed say "unrecorded").
Exit 0 when every metric is identical or consistent, 1 otherwise (a failed re-run included), 2 for bad input
(unknown grid, key or signature, no committed rows, a missing lock file): one line, nothing written.

`launch_note(grid)` is the one line a launch prints when its environment differs from the committed rows'.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.rows import METRICS, REPO, RESULTS, finished, results, seeds_of
from fvq.core import environment
from fvq.core.errors import SetupError, one_line


@dataclass(frozen=True)
class Args:
    grid: str = ""               # a grid with committed rows in results/
    points: str = ""             # signatures to re-run (comma-separated); "" = every committed point
    seeds: str = ""              # seeds to re-run (comma-separated); "" = every committed seed
    runs_dir: str = ""           # scratch runs dir ("" = reproduce/<grid>-<time>); never the committed one
    tracking_uri: str = ""       # "" = a sqlite store inside the scratch runs dir
    results: str = str(RESULTS)
    parallel: int = 2


class ReproduceError(SetupError, ValueError):
    """Bad input to the reproduce command; one line."""


# ---- the committed side -------------------------------------------------------------------------------

def committed(results_dir: Path, grid: str) -> pd.DataFrame:
    """The finished rows of results/<grid>.csv, read by the analysis helpers (types and ranges checked)."""
    from sweeps import grids

    grids.load(grid)  # an unknown grid: one line listing the valid ones
    df = results(Path(results_dir), grid)
    df = finished(df) if df is not None else None
    if df is None or df.empty:
        raise ReproduceError(f"grid {grid} has no committed finished rows in {Path(results_dir) / grid}.csv")
    return df.assign(seed=seeds_of(df))


def recorded_env(row: pd.Series) -> dict[str, str]:
    """A results row's environment ({} for a row collected before the env.* columns)."""
    out = {}
    for k in environment.FIELDS:
        v = row.get(f"env.{k}")
        if isinstance(v, str) and v:
            out[k] = v
    return out


def launch_note(grid: str, results_dir: Path = RESULTS, threads: int = 0, device: str = "cpu") -> str:
    """One line when this machine's environment (with the runs' ``threads``; 0 = as gathered) differs from
    the one recorded for the committed rows of ``grid``; "" when it is the same, or none was recorded."""
    try:
        rows = committed(results_dir, grid)
    except (SetupError, ValueError):
        return ""
    envs = {tuple(sorted(e.items())) for _, r in rows.iterrows() if (e := recorded_env(r))}
    if not envs:
        return ""
    here = environment.gather(device)
    if threads:
        here["threads"] = str(threads)
    diffs = list(dict.fromkeys(d for e in sorted(envs) for d in environment.differences(dict(e), here)))
    if not diffs:
        return ""
    many = f" (they come from {len(envs)} environments)" if len(envs) > 1 else ""
    return (f"[fvq] environment differs from the committed rows of {grid}{many}: {'; '.join(diffs)}: expect "
            f"consistent, not identical, numbers (python -m analysis.reproduce grid={grid})")


def chosen(rows: pd.DataFrame, points: str, seeds: str) -> pd.DataFrame:
    """The rows named by ``points=`` (signature or paper_signature) and ``seeds=``; all rows by default."""
    keep = pd.Series(True, index=rows.index)
    if points:
        names = [p for p in points.split(",") if p]
        unknown = [p for p in names if p not in set(rows["signature"]) | set(rows["paper_signature"])]
        if unknown:
            raise ReproduceError(f"points={unknown[0]}: not a signature or paper_signature of a committed row "
                                 f"(see the signature column of the grid's results CSV)")
        keep &= rows["signature"].isin(names) | rows["paper_signature"].isin(names)
    if seeds:
        if not all(s.strip().isdigit() for s in seeds.split(",")):
            raise ReproduceError(f"seeds={seeds!r}: expected a list of seeds such as 0,1")
        wanted = {int(s) for s in seeds.split(",")}
        missing = sorted(wanted - set(rows.loc[keep, "seed"]))
        if missing:
            raise ReproduceError(f"seeds={seeds}: seed {missing[0]} has no committed row among the chosen points")
        keep &= rows["seed"].isin(wanted)
    return rows[keep]


# ---- the re-run side ----------------------------------------------------------------------------------

def signatures(grid: str, scale: str, overrides: dict[str, str], seeds: list[int]) -> dict[tuple[str, int], str]:
    """{(point json, seed): signature} of every run a launch of ``grid`` with these seeds makes."""
    from sweeps import grids
    from sweeps.identity import signature
    from sweeps.scale import resolve

    return {(json.dumps(p, sort_keys=True), s): signature(resolve(p, scale, {**overrides, "seed": s}))
            for p in grids.load(grid).points() for s in seeds}


def launch(grid: str, scale: str, runs_dir: Path, uri: str, seeds: list[int], overrides: dict[str, str],
           parallel: int, points: list[str]) -> int:
    """``python sweeps/run.py`` for the chosen runs (``points=``) of the grid and seeds, locally, into the
    scratch runs dir and store."""
    seed_arg = f"seed={seeds[0]}" if len(seeds) == 1 else "seeds=" + ",".join(map(str, seeds))
    cmd = [sys.executable, str(REPO / "sweeps" / "run.py"), f"grid={grid}", f"scale={scale}", f"runs_dir={runs_dir}",
           f"tracking_uri={uri}", "launcher=local", f"parallel={parallel}", seed_arg, "points=" + ",".join(points),
           *(f"{k}={v}" for k, v in overrides.items())]
    print("[reproduce] " + " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, cwd=REPO).returncode


# ---- the comparison -----------------------------------------------------------------------------------

def interval(values: pd.Series) -> tuple[float, float] | None:
    """95% prediction interval of one more seed from ``values`` (None under 2 values)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return None
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) * math.sqrt(1 + 1 / n)
    return values.mean() - half, values.mean() + half


def verdict(mine: float, theirs: float, seeds: pd.Series) -> tuple[str, str]:
    """(identical | consistent | outside, the interval as text)."""
    pi = interval(seeds)
    text = f"[{pi[0]:.6g}, {pi[1]:.6g}] (n={len(seeds)})" if pi else f"none (n={len(seeds)})"
    if mine == theirs:
        return "identical", text
    return ("consistent" if pi and pi[0] <= mine <= pi[1] else "outside"), text


def compare(rows: pd.DataFrame, every: pd.DataFrame, runs_dir: Path) -> tuple[list[list[str]], dict[str, int]]:
    """One table line per (run, metric); the counts of each verdict (``failed``: a run without final.json)."""
    from fvq.core.rundir import read_json

    lines, counts = [], {"identical": 0, "consistent": 0, "outside": 0, "failed": 0}
    for _, row in rows.sort_values(["paper_signature", "seed"]).iterrows():
        sig, seed = row["signature"], int(row["seed"])
        got = read_json(str(runs_dir / sig / "final.json")).get("metrics") or {}
        attempts = environment.read(str(runs_dir / sig))
        theirs = recorded_env(row)
        if not theirs:
            env = "committed environment unrecorded"
        elif not attempts:
            env = "re-run environment unrecorded"
        else:
            env = "; ".join(environment.differences(theirs, attempts[-1])) or "same environment"
        if not got:
            counts["failed"] += 1
            lines.append([sig, str(seed), "-", "", "", "failed", "", f"no final.json in {runs_dir / sig}"])
            continue
        point = every[every["paper_signature"] == row["paper_signature"]]
        for m in METRICS:
            if m not in row or pd.isna(row[m]) or got.get(m) is None:
                continue  # not reported on one side (lpips disabled, rfid off): nothing to compare
            word, pi = verdict(float(got[m]), float(row[m]), pd.to_numeric(point[m], errors="coerce").dropna())
            counts[word] += 1
            lines.append([sig, str(seed), m, repr(float(row[m])), repr(float(got[m])), word, pi,
                          env if word != "identical" else ""])
    return lines, counts


def render(lines: list[list[str]]) -> str:
    head = ["signature", "seed", "metric", "committed", "re-run", "verdict", "95% PI of committed seeds",
            "environment (committed -> re-run)"]
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
                     for r in [head, *lines]).rstrip()


# ---- the command --------------------------------------------------------------------------------------

def parse(argv: list[str]) -> tuple[Args, dict[str, str]]:
    """(the command's options, config overrides) through the one parser (fvq/core/keyvalue.py)."""
    from fvq.core.config import all_keys
    from fvq.core.keyvalue import fields_of, split, typed, unknown

    mine, overrides, keys = [], {}, set(all_keys())
    for k, v in split(argv):
        if k in ("seed", "scale"):
            raise ReproduceError(f"{k}= is not an option here: seed and scale come from the committed rows")
        if k in fields_of(Args):
            mine.append((k, v))
        elif k in keys:
            overrides[k] = v
        else:
            raise unknown(k, [*fields_of(Args), *keys])
    opts = typed(Args, mine)
    if not opts.grid:
        raise ReproduceError("give grid=NAME (a grid with committed rows in results/)")
    if opts.parallel < 1:
        raise ReproduceError(f"parallel={opts.parallel}: must be an integer >= 1")
    return opts, overrides


def main(argv: list[str]) -> int:
    from sweeps.tracking import DEFAULT_URI

    try:
        opts, overrides = parse(argv)
        grid = opts.grid
        every = committed(Path(opts.results), grid)
        rows = chosen(every, opts.points, opts.seeds)
        if not environment.LOCK.exists():
            raise ReproduceError(f"no lock file {environment.LOCK}: the environment record needs its hash")
        scales = sorted(set(rows["scale"]))
        if len(scales) != 1:
            raise ReproduceError(f"the chosen rows mix scales {', '.join(scales)}: choose points= of one scale")
        seeds = sorted(set(rows["seed"]))
        sigs = signatures(grid, scales[0], overrides, seeds)
        for _, r in rows.iterrows():
            now = sigs.get((json.dumps(json.loads(r["point"]), sort_keys=True), int(r["seed"])))
            if now != r["signature"]:
                raise ReproduceError(f"committed row {r['signature']} (seed {r['seed']}) resolves now to "
                                     f"{now or 'no point of the grid'}: a default or an override changed its science")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        runs_dir = Path(opts.runs_dir or REPO / "reproduce" / f"{grid}-{stamp}").resolve()
        uri = opts.tracking_uri or f"sqlite:///{runs_dir / 'mlflow.db'}"
        if runs_dir in (REPO / "runs", Path(opts.results).resolve()):
            raise ReproduceError(f"runs_dir={runs_dir}: the committed runs are never re-run into; give a scratch dir")
        if uri == DEFAULT_URI:
            raise ReproduceError(f"tracking_uri={uri}: the committed store is never re-run into; give a scratch one")
    except (SetupError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2

    runs_dir.mkdir(parents=True, exist_ok=True)
    rc = launch(grid, scales[0], runs_dir, uri, seeds, overrides, opts.parallel, sorted(set(rows["signature"])))
    if rc == 2:
        print(f"error: the launch refused (its line above); nothing was re-run into {runs_dir}", file=sys.stderr)
        return 2
    lines, counts = compare(rows, every, runs_dir)
    here = environment.gather()
    print(render(lines))
    runs = f"{len(rows)} run{'s' * (len(rows) != 1)}"
    print(f"reproduce grid={grid}: {runs} re-run in {runs_dir} on {here['cpu']} ({here['cpu_id']}, "
          f"{here['isa']}); " + ", ".join(f"{n} {w}" for w, n in counts.items() if n or w != "failed"))
    return 0 if counts["outside"] == counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
