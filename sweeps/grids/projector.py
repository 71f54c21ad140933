"""Projector type x annealing x codebook size (Table 5, Fig. 3 usage curves).

Rows of Table 5: linear / VQBridge at 16k, MLP-5 / VQBridge at 262k, each with and without annealing.
Fig. 3 reads the same runs' training usage curves.

    python sweeps/run.py grid=projector [scale=paper launcher=slurm]
"""
from sweeps.grids._fragments import k16, k262, linear, mlp5, no_anneal, vqbridge


def points():
    for size, projectors in ((k16, (linear, vqbridge)), (k262, (mlp5, vqbridge))):
        for proj in projectors:
            for sched in (no_anneal, {}):
                yield {**proj, **size, **sched}
