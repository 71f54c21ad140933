"""Generator speed: tokens/s of KV-cached vs uncached sampling at 256 tokens (16x16, the paper's grid),
side by side in one run, and img/s of AR training at the cpu preset.

    PYTHONPATH=. python benchmarks/ar_sampling.py [model=tiny batch=2 vocab=1024 threads=1]

Both samplers draw the same tokens (tests/test_gpt.py); the uncached one recomputes the whole prefix at
every step (O(T^2) token passes instead of O(T)), so the cached one should be several times faster.
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fvq.generation.gpt import GPT, generate, spec  # noqa: E402


def main(argv: list[str]) -> int:
    a = {"model": "tiny", "batch": "2", "vocab": "1024", "threads": "1", "train_steps": "20"}
    a.update(x.split("=", 1) for x in argv)
    torch.set_num_threads(int(a["threads"]))
    torch.manual_seed(0)
    b = int(a["batch"])
    m = GPT(spec(a["model"], vocab=int(a["vocab"]), classes=10, tokens=256))
    y = torch.arange(b) % 10
    out = {}
    for cache in (True, False):
        t0 = time.perf_counter()
        generate(m, y, cfg=1.75, seed=0, cache=cache)
        dt = time.perf_counter() - t0
        out[cache] = b * 256 / dt
        print(f"sampling {'cached  ' if cache else 'uncached'} model={a['model']} batch={b} cfg=1.75 256 tokens: "
              f"{out[cache]:9.1f} tokens/s ({dt:.2f} s)", flush=True)
    print(f"cached / uncached: {out[True] / out[False]:.1f}x", flush=True)

    # AR training img/s at the cpu preset: tiny GPT, batch 64, 8x8 tokens (32 px crops, cpu-4 tokenizer)
    t = GPT(spec("tiny", vocab=1024, classes=22, tokens=64)).train()
    opt = torch.optim.AdamW(t.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=0.05)
    x, yy = torch.randint(1024, (64, 64)), torch.randint(22, (64,))
    steps = int(a["train_steps"])
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()  # two warm-up steps
        loss = t.loss(x, yy)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"AR training cpu preset (tiny, batch 64, 64 tokens): {steps * 64 / (time.perf_counter() - t0):.1f} img/s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
