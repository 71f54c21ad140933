"""``python sweeps/run.py grid=NAME [key=value ...]``: launch a paper ablation grid, idempotently.

    python sweeps/run.py grid=patch_size                      # cpu scale, local launcher, sqlite MLflow
    python sweeps/run.py grid=patch_size dry=true             # list points: signature, overrides, status
    python sweeps/run.py grid=patch_size status=true          # live table, refreshed until no run is active
    python sweeps/run.py grid=patch_size status=true watch=0  # one snapshot
    python sweeps/run.py grid=depth,latent_dim                # several grids in one launch (or grid=all)
    python sweeps/run.py grid=scaling scale=paper launcher=slurm slurm=a100x16 tracking_uri=http://...
    python sweeps/run.py search=vqbridge_lr trials=8          # Optuna search through the same launcher

Harness keys: grid | search, scale (cpu | paper), launcher (local | slurm; default slurm when sbatch is on
PATH and sinfo answers), slurm (spec name in slurm/ or a path), runs_dir, tracking_uri, experiment, parallel (local slots),
order (local launch order: longest first = shortest makespan; shortest = most runs done by a deadline), dry, status (watch=SECONDS between refreshes, 0 = once), retry (resubmit failed runs), force (launch a dirty tree on Slurm), trials (searches).
Every other ``key=value`` is a config override applied to every point (e.g. ``optim.steps=100``).

Relaunch rules: finished -> skip; queued/running -> skip; failed -> skip unless retry=true;
missing or stalled (killed, nobody running it) -> submit (a stalled run resumes from its checkpoint).
Bad input (unknown grid/key, bad value, invalid grid point, bad slurm spec, unreachable tracking server)
is one line on stderr and exit 2, before anything is submitted.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fvq.config import ConfigError, to_flat_dict  # noqa: E402
from sweeps import grids  # noqa: E402
from sweeps.identity import IdentityError, check_stored, science_delta, signature  # noqa: E402
from sweeps.launcher import (REPO, LaunchError, Planned, classify, git_commit, launch_local,  # noqa: E402
                             launch_slurm, refuse_dirty)
from sweeps.scale import resolve  # noqa: E402

HARNESS = {"grid": "", "search": "", "scale": "cpu", "launcher": "", "slurm": "a100x1",
           "runs_dir": os.path.join(REPO, "runs"), "tracking_uri": "", "experiment": "fvq", "parallel": "2", "order": "longest",
           "dry": "false", "status": "false", "retry": "false", "force": "false", "trials": "8",
           "storage": "", "watch": "10"}
TRUE = ("1", "true", "yes", "on")


def slurm_answers() -> bool:
    """Default launcher: slurm when sbatch is on PATH and a controller answers, else local."""
    if not shutil.which("sbatch"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=5).returncode == 0
    except (subprocess.SubprocessError, OSError):
        return False


def parse(argv: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    opts, overrides = dict(HARNESS), {}
    for a in argv:
        if "=" not in a:
            raise ConfigError(f"argument {a!r} is not key=value (see the docstring of sweeps/run.py)")
        k, v = a.split("=", 1)
        (opts if k in HARNESS else overrides)[k] = v
    if bool(opts["grid"]) == bool(opts["search"]):
        raise ConfigError(f"give exactly one of grid=NAME or search=NAME (grids: {', '.join(grids.names())})")
    if not opts["launcher"]:
        opts["launcher"] = "slurm" if slurm_answers() else "local"
    if opts["launcher"] not in ("local", "slurm"):
        raise ConfigError(f"launcher={opts['launcher']!r} is not one of local, slurm")
    if not opts["parallel"].isdigit() or int(opts["parallel"]) < 1:
        raise ConfigError(f"parallel={opts['parallel']!r}: expected a positive int")
    if opts["order"] not in ("longest", "shortest"):
        raise ConfigError(f"order={opts['order']!r} is not one of longest, shortest")
    if not opts["tracking_uri"]:
        from sweeps.tracking import DEFAULT_URI

        opts["tracking_uri"] = DEFAULT_URI
    return opts, overrides


def grid_names(spec: str) -> list[str]:
    """``patch_size`` -> [patch_size]; ``depth,latent_dim`` -> both; ``all`` -> every grid (one launch)."""
    names = grids.names() if spec == "all" else [n for n in spec.split(",") if n]
    for n in names:
        grids.load(n)  # an unknown name is a ConfigError listing the valid ones
    return names


def plan(grid_name: str, scale: str, overrides: dict, runs_root: str) -> list[Planned]:
    """Expand, resolve, validate and classify every point of one grid, or of several (``a,b`` / ``all``:
    a point shared by grids is one run, tagged with each); raises before anything is submitted."""
    import torch

    from fvq.build import build_quantizer
    from fvq.models import ARCHS

    out: dict[str, Planned] = {}
    for name in grid_names(grid_name):
        for i, point in enumerate(grids.load(name).points()):
            try:
                cfg = resolve(point, scale, overrides)
                with torch.device("meta"):  # builds the projector to validate K/p/d'/heads, allocates nothing
                    build_quantizer(cfg)
                if cfg.model.arch not in ARCHS:
                    raise ConfigError(f"model.arch={cfg.model.arch!r} is not one of {', '.join(ARCHS)}")
            except ValueError as e:
                raise ConfigError(f"grid {name} point {i} {point}: {e}") from None
            sig = signature(cfg)
            run_dir = os.path.join(runs_root, sig)
            check_stored(cfg, run_dir)
            if sig not in out:
                state, detail = classify(run_dir)
                out[sig] = Planned(sig, run_dir, science_delta(cfg), state, detail, cfg)
            if name not in out[sig].grids:
                out[sig].grids.append(name)
    return list(out.values())


_ORDER = {"quant": 0, "model": 1, "optim": 2, "sched": 3, "loss": 4}


def table(plans: list[Planned], results: dict | None = None) -> str:
    rows = [f"{'signature':<11} {'state':<9} {'overrides (vs code defaults)':<100} detail"]
    for p in plans:
        state = (results or {}).get(p.sig, p.state)
        # the science that tells grid points apart first; data/eval/log settings shared by a scale last
        keys = sorted((k for k in p.overrides if k != "scale"), key=lambda k: (_ORDER.get(k.split(".")[0], 9), k))
        ov = " ".join(f"{k.split('.')[-1]}={p.overrides[k]}" for k in keys)
        rows.append(f"{p.sig:<11} {state[:9]:<9} {ov[:100]:<100} {p.detail}")
    return "\n".join(rows)


def watch(plans: list[Planned], opts: dict, runs_root: str, every: int) -> int:
    """The status table with each run's progress, redrawn every ``every`` s while any run is active."""
    import time

    from fvq.train import read_status

    while True:
        for p in plans:
            p.state, p.detail = classify(p.run_dir)
            st, final = read_status(p.run_dir), _final_metrics(p.run_dir)
            progress = f"{st.get('step', 0)}/{p.cfg.optim.steps}"
            usage = final.get("usage")
            p.detail = f"{progress:>11}  " + (f"usage={usage:.3f} psnr={final.get('psnr', float('nan')):.2f}  "
                                              if usage is not None else "") + p.detail
        counts = ", ".join(f"{sum(p.state == s for p in plans)} {s}" for s in sorted({p.state for p in plans}))
        text = (f"grid={opts['grid']} scale={opts['scale']} runs_dir={runs_root} ({len(plans)} points: {counts})"
                f"  {time.strftime('%H:%M:%S')}\n{table(plans)}")
        if every and sys.stdout.isatty():
            print("\033[H\033[J", end="")  # redraw in place on a terminal; append under a pipe
        print(text, flush=True)
        if not every or not any(p.state == "active" for p in plans):
            return 0
        time.sleep(every)


def _final_metrics(run_dir: str) -> dict:
    from sweeps.launcher import read_json

    return read_json(os.path.join(run_dir, "final.json")).get("metrics", {})


def write_run(p: Planned, grid_name: str, scale: str, commit: str) -> None:
    """config.json (the science, read back by the job) and tags.json (merged over every grid: the plan's
    own grids, or ``grid_name`` for a search trial)."""
    from fvq.train import prepare_run_dir, write_json
    from sweeps.launcher import read_json

    prepare_run_dir(p.cfg, p.run_dir)
    tags = read_json(os.path.join(p.run_dir, "tags.json"))
    names = p.grids or [grid_name]
    tags.update({"signature": p.sig, "commit": commit, "scale": scale, **{f"grid.{n}": "1" for n in names}})
    tags["grids"] = ",".join(sorted({*tags.get("grids", "").split(","), *names} - {""}))
    write_json(os.path.join(p.run_dir, "tags.json"), tags)


def main(argv: list[str]) -> int:
    try:
        opts, overrides = parse(argv)
        if opts["search"]:
            from sweeps.search import run_search

            return run_search(opts, overrides)
        runs_root = os.path.abspath(opts["runs_dir"])
        plans = plan(opts["grid"], opts["scale"], overrides, runs_root)
        if opts["status"].lower() in TRUE:
            if not opts["watch"].isdigit():
                raise ConfigError(f"watch={opts['watch']!r}: expected seconds (an int >= 0)")
            return watch(plans, opts, runs_root, int(opts["watch"]))
        if opts["dry"].lower() in TRUE:
            print(f"grid={opts['grid']} scale={opts['scale']} runs_dir={runs_root} ({len(plans)} points)")
            print(table(plans))
            return 0
        retry = opts["retry"].lower() in TRUE
        todo = [p for p in plans if p.state in ("missing", "stalled") or (retry and p.state == "failed")]
        commit, dirty = git_commit()
        spec = None
        if opts["launcher"] == "slurm":
            from slurm.spec import load_spec

            spec = load_spec(opts["slurm"])
            refuse_dirty(dirty, opts["force"])
        from sweeps.tracking import check_reachable, ensure_experiment

        check_reachable(opts["tracking_uri"])
    except (ConfigError, IdentityError, LaunchError, RuntimeError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    skipped = {p.state for p in plans} - {"missing", "stalled"}
    print(f"grid={opts['grid']} scale={opts['scale']}: {len(plans)} points, {len(todo)} to submit "
          f"({', '.join(f'{sum(p.state == s for p in plans)} {s}' for s in sorted(skipped)) or 'none skipped'})",
          flush=True)
    ensure_experiment(opts["tracking_uri"], opts["experiment"])
    label = f"{commit}+dirty" if dirty else commit  # the commit tag says when the tree was not clean
    for p in plans:
        write_run(p, opts["grid"], opts["scale"], label) if p in todo else _tag_existing(p, opts)
    if not todo:
        print(table(plans))
        return 0
    if retry:
        for p in todo:
            for name in ("attempts.json",):
                if os.path.exists(os.path.join(p.run_dir, name)):
                    os.unlink(os.path.join(p.run_dir, name))
    if opts["launcher"] == "slurm":
        try:
            ids = launch_slurm(todo, runs_root, opts["tracking_uri"], opts["experiment"], spec, commit, dirty)
        except LaunchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"submitted job array {ids[0].split('_')[0]} ({len(ids)} tasks) from commit {commit[:10]}; "
              f"watch: python sweeps/run.py grid={opts['grid']} scale={opts['scale']} status=true")
        return 0
    results = launch_local(todo, runs_root, opts["tracking_uri"], opts["experiment"], int(opts["parallel"]),
                           shortest_first=opts["order"] == "shortest",
                           show=_Live(plans).show)
    for p in plans:
        p.state, p.detail = classify(p.run_dir)
    print(table(plans))
    failed = [s for s, r in results.items() if r.startswith("failed")]
    print(f"done: {len(results) - len(failed)} finished, {len(failed)} failed. Browse: make mlflow-ui "
          f"(experiment {opts['experiment']!r}, filter "
          + " or ".join(f"tags.\"grid.{n}\" = '1'" for n in grid_names(opts["grid"])) + ")")
    return 1 if failed else 0


def _tag_existing(p: Planned, opts: dict) -> None:
    """A run made by another grid now also belongs to this one: add the grid tag to its MLflow run."""
    from sweeps.launcher import read_json

    ml = read_json(os.path.join(p.run_dir, "mlflow.json"))
    if ml.get("tracking_uri") == opts["tracking_uri"]:
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(opts["tracking_uri"])
            for name in p.grids:  # plan() lists every grid of this launch that holds the point
                client.set_tag(ml["run_id"], f"grid.{name}", "1")
        except Exception as e:  # tags are a convenience; never fail a launch on them
            print(f"[fvq] could not tag run {p.sig}: {e}", file=sys.stderr)


class _Live:
    """Progress of a blocking local launch: one line per change, a bar per run would not fit."""

    def __init__(self, plans: list[Planned]):
        self.plans, self.last = plans, ""

    def show(self, results, running, queue) -> None:
        from fvq.train import read_status

        parts = [f"{sig}:{read_status(p.run_dir).get('step', 0)}" for sig, (p, _) in running.items()]
        line = (f"[sweep] {len(results)} done, {len(running)} running ({' '.join(parts)}), "
                f"{len(queue)} queued")
        if line != self.last:
            self.last = line
            print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
