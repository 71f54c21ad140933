"""Learning annealing on / off with FVQ at K = 16,384 (Table 3 row 3 vs row 6; Table 5 VQBridge rows).

Observation 2: annealing shrinks the one-step-behind term (eq. 20); paper rFID 2.61 -> 1.30.

    python sweeps/run.py grid=annealing [scale=paper launcher=slurm]
"""
from sweeps.grids._fragments import no_anneal, vqbridge


def points():
    yield {**vqbridge}
    yield {**vqbridge, **no_anneal}
