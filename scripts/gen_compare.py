"""The cpu-scale generation comparison (Table 2's question at cpu scale): the same tiny GPT on tokens of a
plain-VQ tokenizer vs an FVQ (VQBridge) tokenizer, several AR seeds each; one row per run in
results/generation_cpu.csv (samples in results/samples/), and mean +- sd (n) per tokenizer on stdout.

    PYTHONPATH=. python scripts/gen_compare.py runs=runs seeds=0,1,2

Tokenizers are the cpu reference points (run dirs ``<runs>/<signature>``, trained first when missing):
plain VQ = ``quant.projector=none``, FVQ = the cpu preset (VQBridge K=1,024). One process at a time.
"""
from __future__ import annotations

import csv
import os
import shutil
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fvq.ar import ARConfig, train_ar  # noqa: E402
from fvq.config import apply_overrides, base_config  # noqa: E402
from fvq.rundir import read_status  # noqa: E402
from sweeps.identity import signature  # noqa: E402

TOKENIZERS = {"vq": ["quant.projector=none"], "fvq": []}


def main(argv: list[str]) -> int:
    args = dict(a.split("=", 1) for a in argv)
    runs = os.path.abspath(args.get("runs", os.path.join(REPO, "runs")))
    seeds = [int(s) for s in args.get("seeds", "0,1,2").split(",")]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    rows = []
    for name, ov in TOKENIZERS.items():
        sig = signature(apply_overrides(base_config("cpu"), ov))
        tok = os.path.join(runs, sig)
        if read_status(tok).get("state") != "FINISHED":
            subprocess.run([sys.executable, "-m", "fvq.train", f"out={tok}", "log.progress=lines", *ov], check=True)
        for seed in seeds:
            out = os.path.join(runs, f"ar-{sig}-tiny-s{seed}")
            res = train_ar(ARConfig(tokenizer=tok, seed=seed), out)
            m = res["metrics"]
            os.makedirs(os.path.join(REPO, "results", "samples"), exist_ok=True)  # Fig. 5 right's panels
            shutil.copy(os.path.join(out, "samples.png"), os.path.join(REPO, "results", "samples",
                                                                       os.path.basename(out) + ".png"))
            rows.append({"tokenizer": name, "tokenizer_signature": sig, "ar_model": "tiny", "ar_seed": seed,
                         "cfg_scale": 1.0, "gfid": m.get("gfid"), "noise_gfid": m.get("noise_gfid"),
                         "precision": m.get("precision"), "recall": m.get("recall"), "is": "",
                         "is_missing": res["missing"].get("is", ""), "samples": int(m["gen_samples"]),
                         "run_dir": os.path.relpath(out, REPO), "commit": commit})
    path = os.path.join(REPO, "results", "generation_cpu.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for name in TOKENIZERS:
        g = [r["gfid"] for r in rows if r["tokenizer"] == name]
        sd = statistics.stdev(g) if len(g) > 1 else float("nan")
        print(f"{name}: gFID {statistics.mean(g):.2f} +- {sd:.2f} (n={len(g)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
