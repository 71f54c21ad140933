"""Patch size p x codebook size K, both in 4^n steps (Fig. 6 right).

The paper finds the best p grows with K: p = 4 at K = 4k, p = 16 at K = 16k.

    python sweeps/run.py grid=patch_size                 # cpu scale, local: K in {256, 1,024}, p in {1, 4, 16}
    python sweeps/run.py grid=patch_size scale=paper launcher=slurm slurm=a100x16
"""
from sweeps.grids._fragments import vqbridge


def points():
    for k in (4096, 16384):
        for p in (4, 16, 64):
            yield {**vqbridge, "quant.codebook_size": k, "quant.group": p}
