"""VQBridge latent dimension d' in {64, 128, 256, 512} at vector channel d = 256, and d' in {64, 128, 256} at
d = 128 (Fig. 6 left).

The paper's best is d' = d; 512 brings nothing. One channel cannot tell "d' = d is best" from "d' = 256 is
best": the second channel, d = 128, can (claim 12c of results/tables/claims.md).

    python sweeps/run.py grid=latent_dim [scale=paper launcher=slurm]
"""
from sweeps.grids._fragments import vqbridge


def points():
    for dim in (64, 128, 256, 512):
        yield {**vqbridge, "quant.latent_dim": dim}
    for dim in (64, 128, 256):
        yield {**vqbridge, "model.channel": 128, "quant.latent_dim": dim}
