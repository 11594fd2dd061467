"""The one table writer of the evaluation: every table as .md, .csv, .tex and .json."""

from __future__ import annotations

import csv
import io as text_io
import json
from dataclasses import dataclass
from pathlib import Path

from mucs_pipeline import artifacts as io


@dataclass(frozen=True)
class Num:
    """A table cell holding a number: text in .md, .csv and .tex ("0.812*", "1.2±0.3",
    "0.50 (p=0.62)"); separate numeric columns in .json and W&B (value, _ci, _p)."""

    value: float | None
    ci: float | None = None  # half-width of the 95% confidence interval
    p: float | None = None  # the test's p-value
    star: bool = False  # significant: "*" after the text
    p_best: float | None = None  # p of the test against the best other method
    dagger: bool = False  # significant against the best other method: "†" after the text
    spec: str = ".3f"  # format of the value (and the CI)
    show_p: bool = False  # "(p=...)" after the text
    text: str | None = None  # the text instead of the formatted value

    def __str__(self) -> str:
        if self.text is not None:
            return self.text
        if self.value is None:
            return "-"
        out = format(self.value, self.spec)
        if self.ci is not None:
            out += "±" + format(self.ci, self.spec.lstrip("+"))
        if self.show_p and self.p is not None:
            out += f" (p={self.p:.2g})"
        return out + ("*" if self.star else "") + ("†" if self.dagger else "")


def numeric(rows: list[dict], columns: list[str]) -> tuple[list[str], list[list]]:
    """Columns and rows with every Num split into numbers: `c`, and `c_ci` / `c_p` /
    `c_p_best` where any row of column `c` has them; what W&B sorts and plots."""

    def has(c: str, part: str) -> bool:
        return any(isinstance(r.get(c), Num) and getattr(r[c], part) is not None for r in rows)

    parts = {c: [part for part in ("ci", "p", "p_best") if has(c, part)] for c in columns}

    def cells(r: dict) -> list:
        out = []
        for c in columns:
            num = r.get(c) if isinstance(r.get(c), Num) else None
            out.append(num.value if num else r.get(c))
            out += [getattr(num, part) if num else None for part in parts[c]]
        return out

    return [x for c in columns for x in (c, *[f"{c}_{p}" for p in parts[c]])], [
        cells(r) for r in rows
    ]


def fmt(value) -> str:
    """A cell as text for reading (.md, .tex): three decimals, or significant digits."""
    if isinstance(value, Num):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.3f}"
    return str(value)


def write_table(rows: list[dict], columns: list[str], base: Path, caption: str) -> str:
    """base.md, base.csv and base.tex of one table, and base.json with its numbers in
    separate columns (value, CI, p: see `numeric`); returns the Markdown. The .csv keeps
    plain numbers at full precision, for reading back."""
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    md = [f"{caption}\n", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(row) + " |" for row in cells]
    markdown = "\n".join(md) + "\n"
    io.atomic_write_text(base.with_suffix(".md"), markdown)
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[str(r.get(c, "")) for c in columns] for r in rows])
    io.atomic_write_text(base.with_suffix(".csv"), buffer.getvalue())

    def tex(text: str) -> str:
        out = text.replace("_", "\\_").replace("%", "\\%").replace("±", "$\\pm$")
        return out.replace("†", "$^\\dagger$")

    body = [" & ".join(tex(c) for c in row) + " \\\\" for row in cells]
    latex = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{tex(caption)}}}",
        "\\begin{tabular}{" + "l" + "r" * (len(columns) - 1) + "}",
        "\\toprule",
        " & ".join(tex(c) for c in columns) + " \\\\",
        "\\midrule",
        *body,
        "\\bottomrule",
        "\\end{tabular}",
        "\\end{table}",
    ]
    io.atomic_write_text(base.with_suffix(".tex"), "\n".join(latex) + "\n")
    number_columns, data = numeric(rows, columns)
    table = {"caption": caption, "columns": number_columns, "data": data}
    io.atomic_write_text(base.with_suffix(".json"), json.dumps(table, indent=1))
    return markdown
