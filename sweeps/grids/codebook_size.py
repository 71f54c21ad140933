"""Codebook size K in {16,384; 65,536; 262,144} with FVQ (Table 3 rows 6, 8, 11; Fig. 7 loss curves).

Group size follows the official scripts: p = 16 at 16k, 64 at 65k and 262k.

    python sweeps/run.py grid=codebook_size [scale=paper launcher=slurm]
"""
from sweeps.grids._fragments import k16, k65, k262, vqbridge


def points():
    for k in (k16, k65, k262):
        yield {**vqbridge, **k}
