"""``python sweeps/run.py grid=NAME [key=value ...]``: launch a paper ablation grid, idempotently.

    python sweeps/run.py grid=patch_size                      # cpu scale, local launcher, sqlite MLflow
    python sweeps/run.py grid=patch_size dry=true             # list points: signature, overrides, status
    python sweeps/run.py grid=patch_size status=true          # live table, refreshed until no run is active
    python sweeps/run.py grid=patch_size status=true watch=0  # one snapshot
    python sweeps/run.py grid=depth,latent_dim                # several grids in one launch (or grid=all)
    python sweeps/run.py grid=projector scale=paper launcher=slurm dry=true   # + GPU-hours per point, total
    python sweeps/run.py grid=projector seeds=3               # every point with seeds 0, 1, 2 (or seeds=0,4,7)
    python sweeps/run.py grid=scaling scale=paper launcher=slurm tracking_uri=http://...  # slurm=a100x16
    python sweeps/run.py search=vqbridge_lr trials=8          # Optuna search through the same launcher
    python sweeps/run.py grid=generation [ar.steps=300]       # the generator on tokenizer points (Table 2)
    python sweeps/run.py claims=undecided budget=2 dry=true   # the seeds undecided claims need, and their cost

Harness keys (typed, sweeps/options.py): grid | search, scale (cpu | paper), launcher (local | slurm; default
slurm when sbatch is on PATH and sinfo answers), slurm (spec name in slurm/ or a path; default a100x16 at
scale=paper, a100x1 otherwise), runs_dir, tracking_uri, experiment, parallel (local slots, at most the cores),
order (longest | shortest first), dry, status (watch= SECONDS between refreshes, 0 = once), points (only these
run signatures of the plan), retry (resubmit failed runs), force (launch a dirty tree on Slurm), sync (compare
every point's MLflow run with its run dir, send what it lacks), trials and storage (searches), claims
(undecided or claim keys: add the seeds those claims of results/tables/claims.md need, cheapest first within
budget= CPU-hours; analysis/seeds.py), seeds (grids: N seeds 0..N-1 or a list, at most 100; seed 0 keeps a
point's signature; seeds=0, a non-integer, a repeated seed or seeds= with seed= are errors). ``ar.KEY=VALUE``
sets the generator's config (grid=generation only). Every other ``key=value`` is a config override applied to
every point (e.g. ``optim.steps=100``); an unknown key is an error.

Relaunch rules (sweeps/state.py): finished or pruned -> skip; active (a live job or Slurm job holds it) -> skip;
failed -> skip unless retry=true; missing, preempted or stalled (killed, nobody running it) -> submit (a
preempted or stalled run resumes from its checkpoint). Every launch goes through sweeps/submit.py.
Bad input (unknown grid/key, bad value, invalid grid point, bad slurm spec, a spec whose GPUs or an
optim.accum that do not divide the global batch, a missing or empty eval.extra set, unreachable tracking
server) is one line on stderr and exit 2, before anything is submitted. With launcher=slurm (and with
dry=true at scale=paper) the launch prints its cost: steps, GPU-hours and wall time per point and in total
(sweeps/estimate.py), with a warning for a run that cannot finish within --time x (max_requeues + 1).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fvq.core.errors import SetupError, one_line, shorten  # noqa: E402
from fvq.core.rundir import read_json, read_status  # noqa: E402
from sweeps.state import classify  # noqa: E402
from sweeps.submit import Batch, Launching, Live, exit_code, plan_line, submits, summary, to_submit  # noqa: E402
from sweeps.options import Options, parse, seeds_text  # noqa: E402
from fvq.core.config import ConfigError  # noqa: E402
from sweeps.plan import (Launch, Planned, check_eval_sets, grid_names, plan_grids, plan_point,  # noqa: E402
                         prepare_launch, write_run)

_ORDER = {"quant": 0, "model": 1, "optim": 2, "sched": 3, "loss": 4}


def table(plans: list[Planned]) -> str:
    rows = [f"{'signature':<11} {'state':<9} {'overrides (vs code defaults)':<100} detail"]
    for p in plans:
        # the science that tells grid points apart first; data/eval/log settings shared by a scale last
        keys = sorted((k for k in p.overrides if k != "scale"), key=lambda k: (_ORDER.get(k.split(".")[0], 9), k))
        ov = " ".join(f"{k.split('.')[-1]}={p.overrides[k]}" for k in keys)
        rows.append(f"{p.sig:<11} {p.state[:9]:<9} {ov[:100]:<100} {p.detail}")
    return "\n".join(rows)


def costs(plans: list[Planned], opts: Options) -> str:
    """Steps, GPU-hours and wall time per point and in total on the launch's Slurm spec
    (sweeps/estimate.py); a spec whose GPUs (or optim.accum) do not divide the batch is a SetupError."""
    from slurm.spec import load_spec
    from sweeps.estimate import cost_report

    try:
        spec = load_spec(opts.slurm)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cost_report(plans, spec)


def watch(plans: list[Planned], opts: Options) -> int:
    """The status table with each run's progress, redrawn every ``opts.watch`` s while any run is active."""
    while True:
        for p in plans:
            p.state, p.detail = classify(p.run_dir)
            final = read_json(os.path.join(p.run_dir, "final.json")).get("metrics", {})
            progress = f"{read_status(p.run_dir).get('step', 0)}/{p.cfg.optim.steps}"
            usage = final.get("usage")
            p.detail = f"{progress:>11}  " + (f"usage={usage:.3f} psnr={final.get('psnr', float('nan')):.2f}  "
                                              if usage is not None else "") + p.detail
        counts = ", ".join(f"{sum(p.state == s for p in plans)} {s}" for s in sorted({p.state for p in plans}))
        text = (f"grid={opts.grid} scale={opts.scale} runs_dir={opts.runs_dir} ({len(plans)} points: {counts})"
                f"  {time.strftime('%H:%M:%S')}\n{table(plans)}")
        if opts.watch and sys.stdout.isatty():
            print("\033[H\033[J", end="")  # redraw in place on a terminal; append under a pipe
        print(text, flush=True)
        if not opts.watch or not any(p.state == "active" for p in plans):
            return 0
        time.sleep(opts.watch)


def main(argv: list[str]) -> int:
    try:
        opts, overrides = parse(argv)
        if opts.grid == "generation":  # generator runs on tokenizer points (sweeps/generation.py)
            from sweeps.generation import plan_generation, run_generation

            ar = {k[3:]: overrides.pop(k) for k in list(overrides) if k.startswith("ar.")}
            if opts.sync:  # the generators and the tokenizers they stand on
                gens = plan_generation(opts, overrides, ar)
                return sync(list({p.run_dir: p for g in gens for p in (g.tok, g)}.values()), opts)
            return run_generation(opts, overrides, ar)
        if opts.search:
            from sweeps.search import run_search

            return run_search(opts, overrides)
        if opts.claims:
            plans = plan_claims(opts, overrides)
            opts = replace(opts, grid=",".join(sorted({g for p in plans for g in p.grids})) or "none")
            if not plans:
                print("nothing to launch")
                return 0
        else:
            plans = plan_grids(opts.grid, opts.scale, overrides, opts.runs_dir, files=opts.launcher == "local",
                               seeds=opts.seeds)
            if opts.points:
                plans = only(plans, opts.points)
        if opts.status:
            return watch(plans, opts)
        if opts.sync:
            return sync(plans, opts)
        if opts.dry:
            prepare_launch(opts)  # every launch check, dry runs included (a dirty tree is not refused)
            print(f"grid={opts.grid} scale={opts.scale} runs_dir={opts.runs_dir} ({len(plans)} points)")
            print(table(plans))
            if opts.launcher == "slurm" or opts.scale == "paper":
                print(costs(plans, opts))
            try:
                check_eval_sets(plans)
            except SetupError as e:
                print(f"note: a launch would stop here: {one_line(e)}")
            return 0
        check_eval_sets(plans)
        cost = costs(plans, opts) if opts.launcher == "slurm" else ""  # checks that the GPUs divide the batch
        launch = prepare_launch(opts)
        if cost:
            print(cost, flush=True)
    except SetupError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    if opts.launcher == "local":  # a Slurm launch's jobs record their own nodes' environment
        from analysis.reproduce import launch_note

        for name in grid_names(opts.grid):  # one line where this machine will not give identical numbers
            note = launch_note(name, Path(opts.results), threads=plans[0].cfg.threads if plans else 0)
            if note:
                print(note, flush=True)
    return launch_grids(plans, opts, launch)


def only(plans: list[Planned], points: str) -> list[Planned]:
    """The plans whose run signature ``points=`` names; a signature the grids do not plan is one line."""
    wanted = [s for s in points.split(",") if s]
    missing = [s for s in wanted if s not in {p.sig for p in plans}]
    if missing:
        raise ConfigError(f"points={shorten(missing[0])}: not a run signature of this launch's plan "
                          f"(`dry=true` lists them)")
    return [p for p in plans if p.sig in wanted]


def plan_claims(opts: Options, overrides: dict) -> list[Planned]:
    """The runs that add the seeds the chosen claims need (analysis/seeds.py), each tagged with its grid so
    that `analysis.collect grid=G seeds=...` finds it; prints one line per claim and the total cost."""
    from analysis.seeds import plan as seed_plan

    if overrides or opts.scale != "cpu" or opts.seeds:
        raise ConfigError("claims= adds seeds to the committed cpu-scale points: give no config overrides, "
                          "seeds= or scale=paper with it")
    try:
        chosen, lines = seed_plan(Path(opts.results), opts.claims, opts.budget)
    except (ValueError, OSError) as e:  # an unknown claim, an unreadable or seedless results CSV
        raise ConfigError(one_line(e)) from None
    print("\n".join(lines), flush=True)
    out: dict[str, Planned] = {}
    for need in chosen:
        for grid, point, seed in need.runs:
            p = plan_point(dict(point), "cpu", {"seed": seed}, opts.runs_dir, grid, files=opts.launcher == "local")
            p.name = f"{p.name} seed={seed}"
            p = out.setdefault(p.sig, p)
            if grid not in p.grids:
                p.grids.append(grid)
    cost = sum(n.cpu_h for n in chosen)
    print(f"claims={opts.claims}: {len(out)} runs, {cost:.2f} CPU-h (about {cost / opts.parallel:.2f} h on "
          f"{opts.parallel} cores)" + (f", budget {opts.budget:g} CPU-h" if opts.budget else ""), flush=True)
    return list(out.values())


def sync(plans: list[Planned], opts: Options) -> int:
    """Reconcile every point's MLflow run with its run dir (fvq/core/track.py: compared, not assumed; only
    what MLflow lacks is sent) and end the launch runs an outage left open."""
    from sweeps.tracking import check_reachable, sync_one

    check_reachable(opts.tracking_uri)  # a corrupt store: one line, before anything is read
    lines = [line for p in plans for line in [sync_one(p.run_dir)] if line] + _sync_launches(opts)
    print("\n".join(lines) if lines else "nothing to send: every point's MLflow run holds all its records")
    return 1 if any(" not sent" in line for line in lines) else 0


def _sync_launches(opts: Options) -> list[str]:
    from sweeps.tracking import TrackingError, sync_launches

    try:
        return sync_launches(opts.runs_dir)
    except TrackingError as e:
        return [f"{one_line(e)} (not sent)"]


def launch_grids(plans: list[Planned], opts: Options, launch: Launch) -> int:
    """Submit what the relaunch rules ask for (sweeps/submit.py) under one parent MLflow run; local waits."""
    from sweeps.tracking import ensure_experiment, sync_ended

    sync_ended(plans)  # ended runs with records MLflow missed (an outage past their end): sent now
    for line in _sync_launches(opts):  # launch runs an outage left open
        print(f"[fvq] {line}", flush=True)
    n_todo = len(to_submit(plans, opts.retry))
    print(f"grid={opts.grid} scale={opts.scale}: {plan_line(plans, opts.retry)}", flush=True)
    exp_id = ensure_experiment(opts.tracking_uri, opts.experiment)
    for p in plans:
        if not submits(p.state, opts.retry):
            _tag_existing(p, opts)
    seeds = f" seeds={seeds_text(opts.seeds)}" if opts.seeds else ""
    tags = {"commit": launch.label, "grids": ",".join(grid_names(opts.grid)), "launcher": opts.launcher,
            "runs": str(n_todo)}
    batch = Batch(plans, write=lambda p, parent: write_run(p, opts.scale, launch, parent))
    try:
        with Launching(opts, launch, f"grid={opts.grid} scale={opts.scale}{seeds}", tags) as launching:
            results = launching.submit(batch, show=Live().show)
    except SetupError as e:  # sbatch refused the array: the parent run is closed FAILED with the reason
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    if opts.launcher == "slurm":
        if results:
            arrays = sorted({i.split("_")[0] for i in results.values()})
            print(f"submitted job array {', '.join(arrays)} ({len(results)} tasks) from commit {launch.label[:10]}; "
                  f"watch: python sweeps/run.py grid={opts.grid} scale={opts.scale} status=true")
        else:
            print(table(plans))
        return 0
    for p in plans:
        p.state, p.detail = classify(p.run_dir)
    print(table(plans))
    if not results:
        return 0
    # MLflow 3's UI opens in its GenAI mode unless the URL asks for the model-training one
    print(f"done: {summary(results)}. Browse: make mlflow-ui, then "
          f"http://127.0.0.1:5000/#/experiments/{exp_id}?workflowType=machine_learning (parent run "
          f"'grid={opts.grid} scale={opts.scale}', or filter "
          + " or ".join(f"tags.\"grid.{n}\" = '1'" for n in grid_names(opts.grid)) + ")")
    return exit_code(launching.results)


def _tag_existing(p: Planned, opts: Options) -> None:
    """A run made by another grid now also belongs to this one: add the grid tag to its MLflow run."""
    ml = read_json(os.path.join(p.run_dir, "mlflow.json"))
    if ml.get("tracking_uri") == opts.tracking_uri:
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(opts.tracking_uri)
            for name in p.grids:  # plan_grids() lists every grid of this launch that holds the point
                client.set_tag(ml["run_id"], f"grid.{name}", "1")
        except Exception as e:  # tags are a convenience; never fail a launch on them
            print(f"[fvq] could not tag run {p.sig}: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
