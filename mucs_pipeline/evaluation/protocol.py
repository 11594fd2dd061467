"""The leave-k-out protocol: each generated item's top-k training items, the union that a
retrain removes, and the result rows of a method against random removal."""

from __future__ import annotations

from pathlib import Path

import torch

from mucs_pipeline import artifacts as io
from mucs_pipeline import rng
from mucs_pipeline.constants import BASELINE
from mucs_pipeline.evaluation.stats import (
    compare,
    compare_two_sided,
    items_needed,
    normalized_difference,
)
from mucs_pipeline.evaluation.tables import write_table

COLUMNS = [
    "method",
    "metric",
    "subset",
    "auc",
    "p_value",
    "n_items",
    "significant",
    "mean_similarity",
    "mean_similarity_random",
    "num_removed",
    "num_removed_random",
    "diff_pct",
    "diff_ci",
    "items_needed",
]


def top_k(num_items: int, k_fraction: float) -> int:
    return max(1, round(k_fraction * num_items))


def top_k_indices(scores: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """(m, k) indices of each generated item's k highest-scored training items.

    Ties (Condition's one-hot cosines are all 0 or 1) are broken in a seeded random order,
    not by index, so that a tied top-k is a random draw from the tied items.
    """
    order = torch.randperm(scores.shape[1], generator=rng.generator("tie-break", seed))
    ranked = torch.sort(scores[:, order], dim=1, descending=True, stable=True).indices
    return order[ranked[:, :k]]


def removal_set(scores: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Sorted union over generated items of each item's k highest-scored training items."""
    return top_k_indices(scores, k, seed).flatten().unique()


def top_k_sets(scores: torch.Tensor, k: int, seed: int = 0) -> list[set[int]]:
    """Each generated item's top-k training items (App. B.2, B.3: their overlaps)."""
    return [set(row.tolist()) for row in top_k_indices(scores, k, seed)]


def result_rows(
    method: str,
    sims: dict[str, dict[str, dict]],
    metric_names: list[str],
    alpha: float,
    removed: dict[str, int],
) -> list[dict]:
    """One row per (metric, subset) from {subset: {method or random: {metric: (N,)}}}.

    `removed`: training items each retrain removed (summed over pooled runs), per method.
    """
    rows = []
    for subset, by_method in sims.items():
        for metric in metric_names:
            s_m = by_method[method][metric].numpy()
            s_r = by_method[BASELINE][metric].numpy()
            # Targets: did removal lower similarity (one-sided)? Controls: did it change at all?
            auc, p = (compare if subset == "target" else compare_two_sided)(s_m, s_r)
            diff, ci = normalized_difference(s_m, s_r)
            rows.append(
                {
                    "method": method,
                    "metric": metric,
                    "subset": subset,
                    "auc": auc,
                    "p_value": p,
                    "n_items": len(s_m),
                    "significant": p < alpha,
                    "mean_similarity": float(s_m.mean()),
                    "mean_similarity_random": float(s_r.mean()),
                    "num_removed": removed[method],
                    "num_removed_random": removed[BASELINE],
                    "diff_pct": diff,  # App. B.1, % (negative: more change than random)
                    "diff_ci": ci,  # half-width of its 95% confidence interval
                    # Targets: items the U test needs for p < alpha at 80% power at this
                    # effect (None: none would do); controls test for no effect.
                    "items_needed": items_needed(s_m, s_r, alpha) if subset == "target" else None,
                }
            )
    return rows


def power_note(rows: list[dict], alpha: float, seeds: int) -> str:
    """Under the table, for each target result that is not significant: the effect, about
    how many items would make it so, and the commands that pool that many (`seeds` runs
    gave the rows' items)."""
    lines = []
    for r in rows:
        if r["subset"] != "target" or r["significant"]:
            continue
        n, needed = r["n_items"], r["items_needed"]
        head = (f"{r['method']} {r['metric']}: not significant with {n} items (p = "
                f"{r['p_value']:.2g}, AUC {r['auc']:.3f}, difference {r['diff_pct']:+.1f}% "
                f"± {r['diff_ci']:.1f})")  # fmt: skip
        if needed is None:
            lines.append(
                f"- {head}; no number of items would make this effect significant: the "
                "removals changed regenerations no more than random removal did"
            )
            continue
        runs = -(-needed * seeds // n)  # seeds of the same size, rounded up
        lines.append(
            f"- {head}; about {needed} items would give p < {alpha} in 80% of experiments "
            f"at this effect: `-m seed={','.join(map(str, range(runs)))}` ({runs} runs of "
            f"{n // seeds} items), then `python -m mucs_pipeline.report <runs_dir>` pools them"
        )
    return ("\nPower (one-sided U test, by resampling the observed similarities):\n"
            + "\n".join(lines) + "\n") if lines else ""  # fmt: skip


def write_results(
    rows: list[dict], folder: Path, runs: str, alpha: float, seeds: int = 1, notes: str = ""
) -> str:
    """results.md, .csv, .tex and .json of result rows in `folder` (the evaluate stage's
    and the report's pooled ones of `seeds` runs; `runs` says which), with the power note
    and `notes` (Markdown: the diagnostics) under the Markdown table; returns the Markdown."""
    caption = f"Leave-k-out results against random removal ({runs})"
    markdown = write_table(rows, COLUMNS, folder / "results", caption)
    notes = power_note(rows, alpha, seeds) + notes
    if notes:
        markdown += notes
        io.atomic_write_text(folder / "results.md", markdown)
    return markdown
