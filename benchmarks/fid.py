"""rFID from few images: torch-fidelity on the full 2048-d statistics vs `fvq.eval.inception.frechet_distance`
(the same formula after the exact span-basis reduction), side by side in one run, same features.

    python benchmarks/fid.py                 # n in {64, 256, 512} real + n fake features, 1 thread
    python benchmarks/fid.py --n 64 --threads 2

Prints seconds per rFID for both, their ratio, the distance and the absolute difference of the two (float
rounding only: the reduction is an isometry, see the docstring of frechet_distance; most of it is the full
computation's, whose ~1,900 zero eigenvalues come out as +-1e-12 noise and still add their square roots). Features are random
correlated 2048-d vectors; the cost depends only on their count and dimension, not on the network.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[64, 256, 512])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from fvq.eval.inception import frechet_distance

    torch.set_num_threads(args.threads)
    print(f"{'n':>5} {'full 2048-d (s)':>16} {'reduced (s)':>12} {'ratio':>7} {'rFID':>10} {'|difference|':>13}")
    for n in args.n:
        g = torch.Generator().manual_seed(n)
        mix = torch.randn(64, 2048, generator=g, dtype=torch.float64)
        real = torch.randn(n, 64, generator=g, dtype=torch.float64) @ mix
        fake = 0.9 * real + 0.5 * torch.randn(n, 2048, generator=g, dtype=torch.float64)
        t0 = time.perf_counter()
        full = fid_statistics_to_metric(fid_features_to_statistics(real), fid_features_to_statistics(fake),
                                        verbose=False)["frechet_inception_distance"]
        t1 = time.perf_counter()
        red = frechet_distance({"feats": real}, fake)
        t2 = time.perf_counter()
        print(f"{n:>5} {t1 - t0:>16.3f} {t2 - t1:>12.3f} {(t1 - t0) / (t2 - t1):>6.0f}x {full:>10.1f} {abs(full - red):>13.2e}")


if __name__ == "__main__":
    main()
