"""Table 10 (Appendix H): projector cost in FLOPs (multiply-adds, G = 1e9), paper vs fvq.vq.flops.

Ours are computed, not measured: fvq.vq.flops.projector_flops at the paper preset (base_config("paper"):
d = 256, d' = d, N = 2, 4 heads, MLP ratio 2, MLP-5) with the group sizes of the codebook-size fragments
(p = 16 at 16,384, p = 64 at 262,144; sweeps/grids/_fragments.py).

    python -m analysis.tables.tab10_flops [--out results/tables]
"""
from __future__ import annotations

from pathlib import Path

from analysis.cells import Notes, gaps
from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

KINDS = {"linear_g": ("Linear", "linear"), "mlp5_g": ("MLP-5", "mlp"), "vqbridge_g": ("VQBridge", "vqbridge")}


def flops(kind: str, num_codes: int) -> int:
    """Multiply-adds of one projector forward pass over the whole codebook, at the paper preset."""
    from fvq.core.config import base_config
    from fvq.vq.flops import projector_flops
    from sweeps.grids._fragments import k16, k262

    q, d = base_config("paper").quant, base_config("paper").model.channel
    group = {k16["quant.codebook_size"]: k16["quant.group"], k262["quant.codebook_size"]: k262["quant.group"]}
    return projector_flops(kind, num_codes, d, latent_dim=q.latent_dim, depth=q.depth, group=group[num_codes],
                           heads=q.heads, mlp_ratio=q.mlp_ratio, mlp_layers=q.mlp_layers)


def build(results: Path, out: Path) -> list[str]:
    notes, rows = Notes(), []
    for ref in paper("tab10_flops").itertuples():
        size = int(ref.codebook_size)
        rows.append(["paper", f"{size:,}", *(f"{getattr(ref, col)}G" for col in KINDS)])
        ours = []
        for col, (_, kind) in KINDS.items():
            try:
                g = flops(kind, size) / 1e9
            except ImportError as e:  # fvq/vq/flops.py not there (yet): say so, never a made-up number
                ours.append(notes.dash(f"fvq.vq.flops unavailable ({e})"))
                continue
            ours.append(f"{g:.2f}G ({g / float(getattr(ref, col)):.2f}x paper)")
        rows.append(["fvq.vq.flops.projector_flops", f"{size:,}", *ours])
    table = Table("Table 10: Estimated Model Computational Cost (in FLOPs).",
                  ["Source", "Codebook Size", *(name for name, _ in KINDS.values())], rows, notes,
                  ["FLOPs = multiply-adds of f(C) over the whole codebook (once per training step; "
                   "nothing at inference: the projected codebook is baked, section 3.2)."])
    write_tables(out, "tab10_flops", [table])
    return gaps(notes)


if __name__ == "__main__":
    raise SystemExit(main(build, "tab10_flops", "tables"))
