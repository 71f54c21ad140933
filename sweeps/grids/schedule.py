"""Schedule variants (Table 9): the reference, without warmup, and with cosine instead of linear decay.

Paper: warmup matters (1.30 -> 1.70 without it); linear vs cosine is negligible (1.32).

    python sweeps/run.py grid=schedule [scale=paper launcher=slurm]
"""
from sweeps.grids._fragments import cosine, no_warmup, vqbridge


def points():
    yield {**vqbridge}
    yield {**vqbridge, **no_warmup}
    yield {**vqbridge, **cosine}
