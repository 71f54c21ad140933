"""VQBridge block variant, ViT (eq. 8-11, the paper's text) vs DiT (the official scripts' qbridge.py), at the
reference K = 16k and the largest K = 262k (Table 10 lists both variants' cost; which one produced Tables 1-5 is
not stated). Feeds the claims table's checks beyond the paper (analysis/tables/claims.py, B16k and B262k).

    python sweeps/run.py grid=bridge seeds=3 [scale=paper launcher=slurm]
"""
from sweeps.grids._fragments import k262, vqbridge


def points():
    for k in ({}, k262):
        for bridge in ("vit", "dit"):
            yield {**vqbridge, **k, **({"quant.bridge": "dit"} if bridge == "dit" else {})}
