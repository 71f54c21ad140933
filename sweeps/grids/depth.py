"""VQBridge depth N in {1, 2, 4} ViT blocks (Fig. 6 middle); the paper keeps N = 2.

    python sweeps/run.py grid=depth [scale=paper launcher=slurm]
"""
from sweeps.grids._fragments import vqbridge


def points():
    for n in (1, 2, 4):
        yield {**vqbridge, "quant.depth": n}
