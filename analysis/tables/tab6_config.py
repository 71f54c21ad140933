"""Table 6 (Appendix G): the reconstruction training configuration, GENERATED from the code's presets.

Every value of the "code" columns is read from fvq.core.config.base_config("paper") (and "cpu" for context) or
from fvq/train.py itself, so this table cannot drift from what runs. Each row is compared with the paper's
Table 6 (the numbers in the cell, in order); a mismatch is flagged in the table and returned as a gap.

    python -m analysis.tables.tab6_config [--out results/tables]
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from analysis.cli import main
from analysis.rows import paper
from analysis.writers import Table, write_tables

COLUMNS = ["Config", "paper (Table 6, reconstruction)", "code: base_config(\"paper\")", "match",
           "code: base_config(\"cpu\")"]


def optimizer() -> str:
    """The optimizer class the tokenizer's training builds (fvq.build.build_parts; not a config key)."""
    import fvq.build

    found = re.findall(r"torch\.optim\.(\w+)\(model\.parameters\(\)", inspect.getsource(fvq.build))
    return found[0] if found else "unknown"


def describe(scale: str) -> dict[str, str]:
    """The Table 6 rows written from the preset, in the paper's own notation."""
    from fvq.core.config import base_config
    from sweeps.scale import IMAGENET_TRAIN

    cfg = base_config(scale)
    o, s, lo = cfg.optim, cfg.sched, cfg.loss
    epochs = o.steps * o.batch / IMAGENET_TRAIN
    schedule = (f"warmup({s.warmup:g}) [baselr({s.constant:g})–linear({1 - s.constant:g})]"
                if s.kind == "anneal" else s.kind)
    return {
        "Base Batch Size": f"{o.base_batch}" + (f" (runs at batch {o.batch})" if o.batch != o.base_batch else ""),
        "Training Epochs": f"{epochs:.0f}" if scale == "paper" else f"{o.steps} steps",
        "Optimizer": optimizer(),
        "Base Learning Rate": f"{o.base_lr:.0e}".replace("e-0", "×10^-"),
        "Learning Rate Schedule": schedule,
        "Warmup Learning Rate": f"{s.warmup_start:g} to 1",
        "Linear Learning Rate": f"1 to {s.final:g}",
        "Optimizer Parameters": f"β1 = {o.beta1:g}, β2 = {o.beta2:g}"
                                + (f", weight_decay = {o.weight_decay:g}" if o.weight_decay else ""),
        "Loss Weight": f"commit loss β = {cfg.quant.beta:g}; perceptual loss λperc = {lo.perceptual_weight:g}; "
                       f"discriminative loss λG = {lo.disc_weight:g}",
    }


def numbers(text: str) -> list[float]:
    """Numbers of a cell in order, with 1×10^-4 read as 1e-4 and subscript indices (β1, λG) dropped."""
    text = re.sub(r"(\d+(?:\.\d+)?)×10\^(-?\d+)", lambda m: f"{float(m[1]) * 10 ** int(m[2]):g}", text)
    text = re.sub(r"(?<=[βλ])\d", "", text)
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


def agrees(config: str, ours: str, theirs: str) -> bool:
    if config == "Training Epochs":  # "40 or 120": the preset trains one of them (120 = epochs=120 points)
        return numbers(ours)[0] in numbers(theirs)
    if config == "Optimizer":
        return ours == theirs
    return numbers(ours) == numbers(theirs)


def build(results: Path, out: Path) -> list[str]:
    code, cpu = describe("paper"), describe("cpu")
    rows, diffs = [], []
    for ref in paper("tab6_config").itertuples():
        ok = agrees(ref.config, code[ref.config], ref.reconstruction)
        if not ok:
            diffs.append(f"Table 6 '{ref.config}' differs: paper {ref.reconstruction!r}, code {code[ref.config]!r}")
        rows.append([ref.config, ref.reconstruction, code[ref.config], "✓" if ok else "DIFFERS", cpu[ref.config]])
    from fvq.core.config import base_config

    cfg = base_config("paper")
    table = Table("Table 6: Experimental configurations (reconstruction), generated from fvq/core/config.py.",
                  COLUMNS, rows, remarks=[
                      f"Peak lr = base lr x batch / base batch (LlamaGen rule): {cfg.lr:g} at batch {cfg.optim.batch}.",
                      "Generation column of the paper's Table 6 (AdamW, base lr 1e-4 at batch 256, 300 epochs): "
                      "the generator's own config, fvq/generation/ar.py ARConfig (sweeps/run.py grid=generation).",
                      "scale=cpu differs by design (sweeps/scale.py): smaller batch and steps, no LPIPS/PatchGAN."])
    write_tables(out, "tab6_config", [table])
    return diffs


if __name__ == "__main__":
    raise SystemExit(main(build, "tab6_config", "tables"))
