"""Multi-code representation VQ with and without FVQ: the five rows of Table 4 (section 4.4).

RQ-VAE (8x8x4, K = 16,384, d = 256) at 10 and 50 epochs vs FVQ (RQ-VAE) at 10; VAR (680_10step,
K = 4,096, d = 32) vs FVQ (VAR) (K = 16,384, d = 256) at 40. The baselines keep their plain codebook and
no annealing (as the VQGAN baseline of Tables 1 and 3); FVQ adds VQBridge (p = 16) and annealing.
At scale=cpu (sweeps/scale.py): K / 16, vq-32 -> cpu-8 (4x4x4 tokens), vq-16 -> cpu-4 with the VAR steps
that fit 8x8 (1,2,3,4,5,6,8), 40 epochs -> 300 steps.

    python sweeps/run.py grid=multicode [dry=true]
    python sweeps/run.py grid=multicode scale=paper launcher=slurm slurm=a100x16
"""
from sweeps.grids._fragments import k16, no_anneal, plain, rq, var, vqbridge

ROWS = [  # (method as printed in Table 4, overrides in paper terms); analysis/tables/tab4_multicode.py
    ("RQ-VAE", {**plain, **no_anneal, **rq, **k16, "epochs": 10}),
    ("RQ-VAE", {**plain, **no_anneal, **rq, **k16, "epochs": 50}),
    ("FVQ (RQ-VAE)", {**vqbridge, **rq, **k16, "epochs": 10}),
    ("VAR", {**plain, **no_anneal, **var, "quant.codebook_size": 4096, "model.channel": 32}),
    ("FVQ (VAR)", {**vqbridge, **var, **k16}),
]


def points():
    for _, row in ROWS:
        yield row
