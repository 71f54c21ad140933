"""Scaling study, the 14 rows of Table 3: epochs 40/120, ratio 16/8, K 16k/65k/262k, channel, VQGAN baselines.

    python sweeps/run.py grid=scaling [scale=paper launcher=slurm slurm=a100x16]
"""
from sweeps.grids._fragments import k16, k65, k262, no_anneal, vqbridge, vqgan

ROWS = [  # (Table 3 row, overrides)
    (1, {**vqgan, **k16, "model.channel": 8}),
    (2, {**vqgan, **k16, "model.channel": 256}),
    (3, {**vqbridge, **k16, **no_anneal}),
    (4, {**vqbridge, **k16, "model.channel": 4}),
    (5, {**vqbridge, **k16, "model.channel": 8}),
    (6, {**vqbridge, **k16}),
    (7, {**vqbridge, **k16, "epochs": 120}),
    (8, {**vqbridge, **k65}),
    (9, {**vqbridge, **k65, "model.channel": 512}),
    (10, {**vqbridge, **k65, "model.channel": 512, "epochs": 120}),
    (11, {**vqbridge, **k262}),
    (12, {**vqbridge, **k262, "epochs": 120}),
    (13, {**vqgan, **k16, "model.channel": 8, "model.arch": "vq-8"}),
    (14, {**vqbridge, **k16, "model.arch": "vq-8"}),
]


def points():
    for _, row in ROWS:
        yield row
