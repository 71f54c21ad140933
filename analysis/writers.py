"""The files an artefact script writes: a `Table` as Markdown and LaTeX (its footnotes and remarks under it),
a figure as PNG and PDF without creation dates (unchanged data rebuilds identical bytes), each written to a
temporary file that replaces the old one only on success, and `remove_artefacts` for a failed build, so no
stale table or figure passes for a current one.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from analysis.cells import Notes


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]
    notes: Notes = field(default_factory=Notes)
    remarks: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        out = [f"**{self.caption}**", "", "| " + " | ".join(self.columns) + " |",
               "|" + "---|" * len(self.columns)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        out += [""] + [f"[{i}] {r}  " for i, r in enumerate(self.notes.reasons, 1)]
        out += [md_text(r) + "  " for r in self.remarks]
        return "\n".join(out).rstrip() + "\n"

    def latex(self) -> str:
        out = ["\\begin{table}[t]\\centering\\small", f"\\caption{{{tex(self.caption)}}}",
               "\\begin{tabular}{" + "l" * len(self.columns) + "}", "\\toprule",
               " & ".join(tex(c) for c in self.columns) + " \\\\", "\\midrule"]
        out += [" & ".join(tex(c) for c in row) + " \\\\" for row in self.rows]
        out += ["\\bottomrule", "\\end{tabular}"]
        out += [f"\\par\\footnotesize [{i}] {tex(r)}" for i, r in enumerate(self.notes.reasons, 1)]
        out += [f"\\par\\footnotesize {tex(r)}" for r in self.remarks]
        return "\n".join(out + ["\\end{table}"]) + "\n"


def md_text(text: str) -> str:
    return text.replace("*", "\\*")  # "* trained on OpenImages" is a footnote, not a bullet


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "‡": r"$^\ddagger$", "†": r"$^\dagger$",
        "◇": r"$^\diamond$", "×": r"$\times$", "β": r"$\beta$", "λ": r"$\lambda$", "–": "--", "≠": r"$\neq$",
        "✓": "yes", "’": "'", "`": ""}


def tex(text: str) -> str:
    text = "".join(_TEX.get(ch, ch) for ch in str(text))
    return re.sub(r"—\\?\[(\d+)\\?\]", r"---\\textsuperscript{\1}", text).replace("—", "---")


def write_tables(out: Path, stem: str, tables: list[Table]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for ext, text in (("md", "\n".join(t.markdown() for t in tables)), ("tex", "\n".join(t.latex() for t in tables))):
        with _atomic(out / f"{stem}.{ext}") as tmp:
            tmp.write_text(text)


def save_figure(fig, out: Path, stem: str) -> None:
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    try:
        for ext in ("png", "pdf"):
            with _atomic(out / f"{stem}.{ext}") as tmp:
                fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata=_metadata(ext))
    finally:
        plt.close(fig)


def _metadata(ext: str) -> dict:
    # No creation dates in the files: rebuilding unchanged data gives identical figures.
    return {"CreationDate": None} if ext == "pdf" else {"Software": None}


class _atomic:
    """A temporary path beside ``path`` that replaces it only when the block succeeds: a failed build never
    leaves a half-written artefact."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=self.path.suffix)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, kind, *_):
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def remove_artefacts(out: Path, stem: str) -> None:
    """After a failed build, no stale table or figure of that stem may pass for a current one."""
    for ext in ("md", "tex", "png", "pdf"):
        (Path(out) / f"{stem}.{ext}").unlink(missing_ok=True)
