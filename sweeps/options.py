"""Harness options of ``sweeps/run.py``: a frozen dataclass parsed like the config (fvq/core/config.py).

Every ``key=value`` whose key is a field here is a harness option; every other one is a config override
applied to every point. Values are typed by the field (fvq/core/keyvalue.py, the one parser), choices
and ranges are checked, and each bad value is one line naming the key.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from typing import Annotated

from fvq.core.config import ConfigError, all_keys
from fvq.core.keyvalue import fields_of, split, typed, unknown
from fvq.core.errors import shorten

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Options:
    grid: str = ""               # a grid of sweeps/grids/, several (a,b) or all
    search: str = ""             # an Optuna search of sweeps/searches/
    scale: str = "cpu"           # cpu | paper (sweeps/scale.py)
    launcher: str = ""           # local | slurm; "" = slurm when sbatch is on PATH and sinfo answers
    slurm: str = ""              # a spec of slurm/*.yaml or a path; "" = a100x16 at scale=paper (the official
                                 # 2 x 8 A100 layout, 8 images per GPU), a100x1 otherwise
    runs_dir: str = os.path.join(REPO, "runs")
    tracking_uri: str = ""       # "" = the local sqlite store (sweeps/tracking.py DEFAULT_URI)
    experiment: str = "fvq"
    parallel: int = 2            # local slots, <= cores (two 1-thread runs beat one 2-thread run on 2 cores)
    order: str = "longest"       # local launch order: longest first (shortest makespan) | shortest first
    dry: bool = False            # print the plan, submit nothing
    status: bool = False         # live status table (redrawn every `watch` s; 0 = one snapshot)
    watch: int = 10
    retry: bool = False          # resubmit failed runs
    sync: bool = False           # compare every point's MLflow run with its run dir, send what it lacks; no launch
    force: bool = False          # launch a dirty tree on Slurm (a snapshot of it is pinned)
    trials: int = 8              # searches: finished trials wanted
    points: str = ""             # grids: launch only these run signatures (comma-separated) of the plan
    seeds: Seeds = ()            # grids: seed axis, N (seeds 0..N-1) or a list 0,3,7, at most MAX_SEEDS;
                                 # () = the config's seed
    storage: str = ""            # searches: Optuna RDB storage ("" = sqlite:///<repo>/optuna.db)
    claims: str = ""             # add the seeds undecided claims need: undecided | a list 12a,13b (analysis/seeds.py)
    budget: float = 0.0          # claims=: CPU-hours to spend at most (0 = no cap)
    results: str = os.path.join(REPO, "results")  # claims=: the committed results the plan is read from


CHOICES = {"scale": ("cpu", "paper"), "launcher": ("local", "slurm"), "order": ("longest", "shortest")}
MINIMUM = {"parallel": 1, "watch": 0, "trials": 1}
# A seed axis multiplies every point: 100 seeds of the largest grid is already thousands of runs, and a
# typo (seeds=1000000) would plan for minutes before printing anything.
MAX_SEEDS = 100


def cores() -> int:
    """The cores this process may run on (a cgroup or taskset limit included, where the OS says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def slurm_answers() -> bool:
    """Default launcher: slurm when sbatch is on PATH and a controller answers, else local."""
    if not shutil.which("sbatch"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=5).returncode == 0
    except (subprocess.SubprocessError, OSError):
        return False


def parse(argv: list[str]) -> tuple[Options, dict[str, str]]:
    """``key=value`` arguments -> (harness options, config overrides); raises ConfigError on bad input."""
    types, mine, overrides = fields_of(Options), [], {}
    config_keys = set(all_keys())
    for k, v in split(argv, "see the docstring of sweeps/run.py"):
        if k in types:
            mine.append((k, v))
        elif k in config_keys or k.startswith("ar."):  # ar.KEY: the generator's (typed by fvq.generation.ar)
            overrides[k] = v
        else:
            raise unknown(k, [*types, *config_keys])
    opts = typed(Options, mine)
    given = {k for k, _ in mine}
    if opts.grid != "generation" and any(k.startswith("ar.") for k in overrides):
        key = next(k for k in overrides if k.startswith("ar."))
        raise ConfigError(f"{shorten(key)}: ar.KEY overrides are the generator's; they apply to grid=generation only")
    if sum(map(bool, (opts.grid, opts.search, opts.claims))) != 1:
        from sweeps import grids

        raise ConfigError("give exactly one of grid=NAME, search=NAME or claims=undecided|KEYS "
                          f"(grids: {', '.join(grids.names())})")
    if not (0 <= opts.budget < float("inf")):
        raise ConfigError(f"budget={opts.budget:g}: CPU-hours must be a number >= 0 (0 = no cap)")
    if not opts.launcher:
        opts = replace(opts, launcher="slurm" if slurm_answers() else "local")
    for key, allowed in CHOICES.items():
        if getattr(opts, key) not in allowed:
            raise ConfigError(f"{key}={shorten(repr(getattr(opts, key)))} is not one of {', '.join(allowed)}")
    for key, low in MINIMUM.items():
        if getattr(opts, key) < low:
            raise ConfigError(f"{key}={getattr(opts, key)}: must be >= {low}")
    # each local slot is a 1-thread run (and the rFID warm-up takes `parallel` threads): more slots than
    # cores only oversubscribes. Checked when given, so the default 2 still runs on a 1-core machine.
    if "parallel" in given and opts.launcher == "local" and opts.parallel > cores():
        raise ConfigError(f"parallel={opts.parallel}: this machine has {cores()} cores (give at most {cores()})")
    if not opts.slurm:
        opts = replace(opts, slurm="a100x16" if opts.scale == "paper" else "a100x1")
    if opts.seeds:
        if opts.search:
            raise ConfigError(f"seeds={seeds_text(opts.seeds)}: a seed axis is for grid launches (a search samples "
                              f"its own points)")
        if "seed" in overrides:
            raise ConfigError(f"seed given twice: seeds={seeds_text(opts.seeds)} and seed={overrides['seed']} "
                              f"(give one)")
    if not opts.tracking_uri:
        from sweeps.tracking import DEFAULT_URI

        opts = replace(opts, tracking_uri=DEFAULT_URI)
    return replace(opts, runs_dir=os.path.abspath(opts.runs_dir)), overrides


def parse_seeds(text: str) -> tuple[int, ...]:
    """``3`` -> (0, 1, 2); ``0,3,7`` -> (0, 3, 7); ``""`` -> () (no seed axis). Seed 0 is the config default,
    so a seed-0 run keeps the signature it has without a seed axis. A count < 1, a non-integer or a repeated
    seed is a ConfigError."""
    if not text.strip():
        return ()
    parts = text.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"seeds={shorten(repr(text))}: expected a count N >= 1 or a list of seeds such as 0,1,2")
    if len(parts) == 1:
        n = int(parts[0])
        if n < 1:
            raise ConfigError(f"seeds={text}: the number of seeds must be >= 1")
        if n > MAX_SEEDS:
            raise ConfigError(f"seeds={shorten(text)}: at most {MAX_SEEDS} seeds (sweeps/options.py MAX_SEEDS)")
        return tuple(range(n))
    if len(parts) > MAX_SEEDS:
        raise ConfigError(f"seeds={shorten(text)}: {len(parts)} seeds, at most {MAX_SEEDS} "
                          f"(sweeps/options.py MAX_SEEDS)")
    seeds = tuple(int(p) for p in parts)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={text}: a seed is given twice")
    return seeds


# A seed axis field: typed by parse_seeds (fvq/core/keyvalue.py); the annotation is resolved when first parsed.
Seeds = Annotated[tuple[int, ...], parse_seeds]


def seeds_text(seeds: tuple[int, ...]) -> str:
    """The seeds as a user writes them: ``3`` for (0, 1, 2), else the list."""
    return str(len(seeds)) if seeds == tuple(range(len(seeds))) else ",".join(map(str, seeds))

