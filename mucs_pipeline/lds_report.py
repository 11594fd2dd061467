"""The LDS part of `python -m mucs_pipeline.report`: one table per set of subset models.

Every finished `lds` unit under the folder is a row; rows measured on the same subset
models and query losses (one run name, seed and lds_outputs unit) form one table, written
to `<runs dir>/report/lds-<name>-seed<seed>-<outputs key>/`: table_lds.md / .csv / .json
(every method's LDS with its bootstrap CI and the two-seed ceiling per query set, next to
the same scores' leave-k-out AUC where an evaluate stage used them), fig_lds.png (LDS per
method with CIs), each method's scatter of one query (fig_scatter_<method>_<set>.png),
and agreement.md: Kendall's tau between the method orderings of the two protocols.
"""

from __future__ import annotations

import csv
import io as io_module
import json
import math
import re
import shutil
from collections import defaultdict
from pathlib import Path

from scipy.stats import kendalltau

from mucs_pipeline import artifacts as io
from mucs_pipeline.constants import BASELINE
from mucs_pipeline.evaluation import figures
from mucs_pipeline.manifest import read_manifest

REPORT_FILES = ["table_lds.*", "agreement.md", "fig_*.png"]


def read_units(root: Path) -> list[dict]:
    """Every finished lds unit under root: its lds.json with `folder`, a key of the subset
    models' outputs it was measured on (a hash of their units' keys) and its subsets'."""
    rows = []
    for path in sorted(root.rglob("lds/*/lds.json")):
        manifest_path = path.parent / "manifest.json"
        if not manifest_path.exists():
            continue  # a unit still running
        manifest = read_manifest(manifest_path)
        row = json.loads(path.read_text())
        row["folder"] = path.parent
        outputs = sorted(v for k, v in manifest["inputs"].items() if k.startswith("lds_outputs"))
        row["models"] = (io.config_hash(*outputs), manifest["inputs"]["lds_subsets"])
        rows.append(row)
    return rows


def leave_k_out_aucs(root: Path) -> dict[tuple[str, int, str], dict]:
    """(name, seed, attribute folder name) -> the first metric's AUC and p on the
    attributed items, from every finished evaluate stage under root."""
    out = {}
    for path in sorted(root.rglob("evaluate/*/run.json")):
        info = json.loads(path.read_text())
        results = path.parent / "results.csv"
        if not results.exists() or not isinstance(info.get("attribute"), dict):
            continue
        with open(results) as f:
            rows = [r for r in csv.DictReader(f) if r["subset"] == "target"]
        if not rows:
            continue
        folder = Path(info["attribute"].get(info.get("method"), "")).name
        out[info["name"], info["seed"], folder] = {
            "metric": rows[0]["metric"], "auc": float(rows[0]["auc"]),
            "p": float(rows[0]["p_value"]),
        }  # fmt: skip
    return out


def labels(rows: list[dict]) -> list[str]:
    """Each row's method, with the settings that tell apart rows of one method
    (`mucs[lam=0.1]`), as the leave-k-out tables label a sweep."""
    by_method = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    out = []
    for r in rows:
        same = by_method[r["method"]]
        cfgs = [json.dumps(x["method_cfg"], sort_keys=True) for x in same]
        if len(set(cfgs)) == 1:
            out.append(r["method"])
            continue
        keys = sorted({k for x in same for k in x["method_cfg"]})
        differ = [k for k in keys if len({json.dumps(x["method_cfg"].get(k)) for x in same}) > 1]
        settings = ",".join(f"{k}={r['method_cfg'].get(k)}" for k in differ)
        out.append(f"{r['method']}[{settings}]")
    return out


def _cell(res: dict | None) -> str:
    if res is None:
        return ""
    ci = f" [{res['ci_low']:.3f}, {res['ci_high']:.3f}]"
    return f"{res['lds']:.3f}{ci}"


def table(rows: list[dict], aucs: dict) -> tuple[list[str], list[list], list[str]]:
    """(columns, data, markdown lines) of one group's LDS table."""
    sets = [q for q in ("generated", "heldout") if any(q in r["queries"] for r in rows)]
    columns = ["method"]
    for q in sets:
        columns += [f"lds_{q}", f"lds_{q}_ci_low", f"lds_{q}_ci_high"]
    columns += ["auc", "auc_p", "auc_metric"]
    data, md = [], []
    header = ["method", *[f"LDS, {q} (95% CI)" for q in sets], "leave-k-out AUC (p)"]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in zip(labels(rows), rows, strict=True):
        auc = aucs.get((r["name"], r["seed"], r["attribute"].get("generated", "")))
        line = [label]
        cells = [label]
        for q in sets:
            res = r["queries"].get(q)
            none = res is None
            line += [None, None, None] if none else [res["lds"], res["ci_low"], res["ci_high"]]
            cells.append(_cell(res))
        line += [None, None, None] if auc is None else [auc["auc"], auc["p"], auc["metric"]]
        cells.append("" if auc is None else f"{auc['auc']:.3f} ({auc['p']:.2g}), {auc['metric']}")
        data.append(line)
        md.append("| " + " | ".join(cells) + " |")
    ceilings = {q: r["queries"][q] for r in rows for q in sets
                if q in r["queries"] and r["queries"][q].get("ceiling") is not None}  # fmt: skip
    if ceilings:
        md += ["", "Ceiling (the LDS of retraining itself, from two models per subset seeds "
               "apart: their agreement, and the ceiling it sets against their mean): "
               + ", ".join(f"{q} {v['ceiling']:.3f} (agreement {v['replicate_agreement']:.3f})"
                           for q, v in ceilings.items())]  # fmt: skip
    return columns, data, md


def agreement(columns: list[str], data: list[list], query_set: str = "generated") -> str:
    """Kendall's tau between the methods' orderings by LDS and by leave-k-out AUC (random
    removal left out: its AUC is the null's 0.5 by construction)."""
    if f"lds_{query_set}" not in columns:
        return f"No LDS on {query_set} queries: no ordering to compare."
    i, j = columns.index(f"lds_{query_set}"), columns.index("auc")
    pairs = [(row[i], row[j]) for row in data if row[0] != BASELINE
             and all(v is not None and math.isfinite(v) for v in (row[i], row[j]))]  # fmt: skip
    if len(pairs) < 3:
        return (f"Kendall's tau needs three or more methods with both an LDS on {query_set} "
                f"queries and a leave-k-out AUC; {len(pairs)} here.")  # fmt: skip
    tau, p = kendalltau([a for a, _ in pairs], [b for _, b in pairs])
    return (f"Kendall's tau between the method orderings by LDS ({query_set} queries) and by "
            f"leave-k-out AUC: {tau:.3f} (p {p:.2g}, {len(pairs)} methods).")  # fmt: skip


def report_lds(root: Path) -> list[tuple[str, str, Path]]:
    """Write every LDS table under root/report; return (run name, outputs key, folder)
    of each."""
    groups = defaultdict(list)
    for row in read_units(root):
        groups[row["name"], row["seed"], row["models"]].append(row)
    aucs = leave_k_out_aucs(root) if groups else {}
    written = []
    for (name, seed, (outputs, _)), rows in groups.items():
        rows.sort(key=lambda r: (r["method"] == BASELINE, r["method"]))
        out = root / "report" / f"lds-{name}-seed{seed}-{outputs}"
        columns, data, md = table(rows, aucs)
        subsets = max(q["num_subsets"] for r in rows for q in r["queries"].values())
        title = f"LDS, {name} seed {seed} ({subsets} subset models)"
        with io.rewrite_folder(out, REPORT_FILES):
            io.atomic_write_text(out / "table_lds.md", "\n".join([f"# {title}", "", *md]) + "\n")
            table_json = json.dumps({"columns": columns, "data": data}, indent=2)
            io.atomic_write_text(out / "table_lds.json", table_json)
            text = io_module.StringIO()
            csv.writer(text).writerows([columns, *data])
            io.atomic_write_text(out / "table_lds.csv", text.getvalue())
            note = agreement(columns, data)
            io.atomic_write_text(out / "agreement.md", note + "\n")
            named = list(zip(labels(rows), rows, strict=True))
            bars = [{"method": lb, "query_set": q, **r["queries"][q]}
                    for lb, r in named for q in r["queries"]]  # fmt: skip
            figures.lds_bars(bars, out / "fig_lds.png")
            for lb, r in named:
                for scatter in r["folder"].glob("scatter_*.png"):
                    safe = re.sub(r"[^A-Za-z0-9_.=,\[\]-]", "_", lb)  # a label as a file name
                    copy = out / f"fig_{scatter.stem}_{safe}.png"
                    io.atomic_write(copy, lambda tmp, src=scatter: shutil.copyfile(src, tmp))
        print(f"\n{title} -> {out}\n" + "\n".join(md) + f"\n{note}")
        written.append((name, outputs, out))
    return written
