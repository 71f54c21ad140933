"""VQBridge latent dimension d' in {64, 128, 256, 512} at vector channel d = 256 (Fig. 6 left).

The paper's best is d' = d; 512 brings nothing.

    python sweeps/run.py grid=latent_dim [scale=paper launcher=slurm]
"""
from sweeps.grids._fragments import vqbridge


def points():
    for dim in (64, 128, 256, 512):
        yield {**vqbridge, "quant.latent_dim": dim}
