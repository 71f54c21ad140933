"""Table 10 (Appendix H): projector cost in FLOPs (multiply-adds, G = 1e9), paper vs fvq.vq.flops.

Ours are computed, not measured: fvq.vq.flops.projector_flops at the paper preset (base_config("paper"):
d = 256, d' = d, N = 2, 4 heads, MLP ratio 2, MLP-5) with the group sizes of the codebook-size fragments
(p = 16 at 16,384, p = 64 at 262,144; sweeps/grids/_fragments.py). Two rows per size: the default
``quant.bridge=vit`` (eq. 8-11) and ``quant.bridge=dit``, the DiT-style bridge the official scripts train
(qbridge.py; the same settings are its QBridge-L/4 at 16,384 and QBridge-L/8 at 262,144, FVQ-16384.sh:12,
FVQ-262144.sh:12). The paper's VQBridge column is fvcore's count of that DiT bridge (qbridge.py:473-491;
fvq/vq/flops.py says what fvcore adds to our matrix products). A second table gives the projectors'
parameters (not in the paper).

    python -m analysis.tables.tab10_flops [--out results/tables]
"""
from __future__ import annotations

from pathlib import Path

from analysis.cells import Notes, gaps
from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

KINDS = {"linear_g": ("Linear", "linear"), "mlp5_g": ("MLP-5", "mlp"), "vqbridge_g": ("VQBridge", "vqbridge")}
# quant.bridge -> the Source column of its row (fvq/vq/projectors.py: vit is eq. 8-11, dit is qbridge.py)
BRIDGE_ROWS = {"vit": "fvq.vq.flops.projector_flops", "dit": "fvq.vq.flops.projector_flops, quant.bridge=dit"}
NO_BRIDGE = "n/a"  # Linear and MLP-5 have no bridge: the dit row differs in the VQBridge column only


def _paper_kwargs(num_codes: int, bridge: str) -> tuple[int, dict]:
    """(d, projector keywords) of the paper preset at ``num_codes``, group size from the codebook fragments."""
    from fvq.core.config import base_config
    from sweeps.grids._fragments import k16, k262

    q, d = base_config("paper").quant, base_config("paper").model.channel
    group = {k16["quant.codebook_size"]: k16["quant.group"], k262["quant.codebook_size"]: k262["quant.group"]}
    return d, dict(latent_dim=q.latent_dim, depth=q.depth, group=group[num_codes], heads=q.heads,
                   mlp_ratio=q.mlp_ratio, mlp_layers=q.mlp_layers, bridge=bridge)


def flops(kind: str, num_codes: int, bridge: str = "vit") -> int:
    """Multiply-adds of one projector forward pass over the whole codebook, at the paper preset."""
    from fvq.vq.flops import projector_flops

    d, kw = _paper_kwargs(num_codes, bridge)
    return projector_flops(kind, num_codes, d, **kw)


def params(kind: str, num_codes: int, bridge: str = "vit") -> int:
    """Trainable parameters of the projector at the paper preset (fvq.vq.flops.projector_params)."""
    from fvq.vq.flops import projector_params

    d, kw = _paper_kwargs(num_codes, bridge)
    return projector_params(kind, num_codes, d, **kw)


def build(results: Path, out: Path) -> list[str]:
    notes, rows = Notes(), []
    for ref in paper("tab10_flops").itertuples():
        size = int(ref.codebook_size)
        rows.append(["paper", f"{size:,}", *(f"{getattr(ref, col)}G" for col in KINDS)])
        for bridge, source in BRIDGE_ROWS.items():
            ours = []
            for col, (_, kind) in KINDS.items():
                if bridge != "vit" and kind != "vqbridge":
                    ours.append(NO_BRIDGE)
                    continue
                try:
                    g = flops(kind, size, bridge) / 1e9
                except ImportError as e:  # fvq/vq/flops.py not there (yet): say so, never a made-up number
                    ours.append(notes.dash(f"fvq.vq.flops unavailable ({e})"))
                    continue
                ours.append(f"{g:.2f}G ({g / float(getattr(ref, col)):.2f}x paper)")
            rows.append([source, f"{size:,}", *ours])
    table = Table("Table 10: Estimated Model Computational Cost (in FLOPs).",
                  ["Source", "Codebook Size", *(name for name, _ in KINDS.values())], rows, notes,
                  ["FLOPs = multiply-adds of f(C) over the whole codebook (once per training step; "
                   "nothing at inference: the projected codebook is baked, section 3.2).",
                   "fvq rows: quant.bridge=vit (the default, eq. 8-11) and quant.bridge=dit (qbridge.py's DiT, "
                   "which the official scripts train: QBridge-L/4 at 16,384, L/8 at 262,144); the DiT adds only "
                   "the adaLN of one conditioning vector. The paper's VQBridge numbers are fvcore's count of the "
                   "DiT bridge, whose LayerNorms and unpatchify fvq.vq.flops leaves out (matrix products only). "
                   f"{NO_BRIDGE}: Linear and MLP-5 have no bridge."])
    tables = [table]
    try:
        tables.append(_params_table())
    except ImportError as e:
        notes.dash(f"fvq.vq.flops unavailable ({e})")
    write_tables(out, "tab10_flops", tables)
    return gaps(notes)


def _params_table() -> Table:
    """Parameters of the same projectors (not in the paper): what each bridge costs in weights."""
    rows = []
    for size in (16384, 262144):
        cells = [params("linear", size), params("mlp", size), params("vqbridge", size, "vit"),
                 params("vqbridge", size, "dit")]
        rows.append([f"{size:,}", *(f"{n / 1e6:.2f}M" for n in cells)])
    return Table("Projector parameters at the paper preset (not in the paper).",
                 ["Codebook Size", "Linear", "MLP-5", "VQBridge (quant.bridge=vit)", "VQBridge (quant.bridge=dit)"],
                 rows, Notes(),
                 ["fvq.vq.flops.projector_params: trainable parameters; the dit bridge's fixed sin-cos position "
                  "embedding is a buffer (qbridge.py keeps it as a frozen Parameter)."])


if __name__ == "__main__":
    raise SystemExit(main(build, "tab10_flops", "tables"))
