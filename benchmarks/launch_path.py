"""Launch-path wall time: `grid=patch_size` through this checkout vs an older commit, side by side in one run.

    python benchmarks/launch_path.py                      # vs 47f5878 (three launch paths), 3 rounds, 20 steps
    python benchmarks/launch_path.py --old 1762bb4 --rounds 5 --steps 200

Both sides launch the same six points of Fig. 6 (right) at cpu scale on the local launcher (`parallel=2`, the
2-core default), each into its own fresh runs dir and sqlite MLflow store, with the same short training
(`optim.steps`, no rFID, 64 val images) so the time is mostly what the launch path costs: planning, claiming,
writing run dirs, parent and child MLflow runs, process start, the end of launch. The old commit runs from a
temporary git worktree with this interpreter. Sides alternate (old, new, new, old, ...) so a load from other
processes on a shared machine biases neither; each side's median round is kept, and the ratio new / old is
the number to read (< 1: the new path is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(checkout: str, work: str, steps: int) -> float:
    """Seconds for one whole `sweeps/run.py grid=patch_size` from ``checkout`` into a fresh store under ``work``."""
    os.makedirs(work)
    cmd = [sys.executable, "sweeps/run.py", "grid=patch_size", "launcher=local", "parallel=2",
           f"runs_dir={work}/runs", f"tracking_uri=sqlite:///{work}/mlflow.db", f"optim.steps={steps}",
           "eval.fid=false", "eval.images=64"]
    env = {**os.environ, "PYTHONPATH": checkout}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"{checkout}: grid=patch_size exited {p.returncode}: {(p.stderr or p.stdout).strip()[-400:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="47f5878", help="the commit to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory(prefix="fvq-launch-") as tmp:
        old = os.path.join(tmp, "old")
        subprocess.run(["git", "worktree", "add", "-q", "--detach", old, a.old], cwd=REPO, check=True)
        try:
            times: dict[str, list[float]] = {"old": [], "new": []}
            for r in range(a.rounds):
                for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    t = launch(old if side == "old" else REPO, os.path.join(tmp, f"{side}{r}"), a.steps)
                    times[side].append(t)
                    print(f"round {r + 1}/{a.rounds} {side}: {t:.1f} s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", old], cwd=REPO)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"old": a.old, "new": head.strip(), "rounds": a.rounds, "steps": a.steps, "cpus": os.cpu_count(),
           "seconds": times, "median_s": med, "ratio_new_over_old": med["new"] / med["old"]}
    print(json.dumps(out))
    print(f"grid=patch_size (6 points, {a.steps} steps): old {a.old} {med['old']:.1f} s, new {out['new']} "
          f"{med['new']:.1f} s (median of {a.rounds}); new / old = {out['ratio_new_over_old']:.2f}")


if __name__ == "__main__":
    main()
