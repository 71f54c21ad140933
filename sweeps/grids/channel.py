"""Vector channel d in {4, 8, 256, 512} with FVQ at K = 16,384 (Table 3 rows 4-6, Fig. 6).

d' follows d (the paper's final configuration, section 4.2).

    python sweeps/run.py grid=channel [scale=paper launcher=slurm]
"""
from sweeps.grids._fragments import vqbridge


def points():
    for d in (4, 8, 256, 512):
        yield {**vqbridge, "model.channel": d}
