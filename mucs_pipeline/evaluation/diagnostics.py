"""Diagnostics of a leave-k-out run, for a result that is not significant: how much
regeneration drifts with nothing but random removal, how closely F1 fits its training set,
how often unlearning hit its step cap. Each comes with what it means and which knob moves it."""

from __future__ import annotations

import torch

from mucs_pipeline import rng


def nearest_share(
    generated: torch.Tensor, train: torch.Tensor, seed: int, most: int = 2000
) -> float:
    """Share of generated images whose nearest training image (pixel L2) is closer than the
    median distance from a training image to its nearest other one (at most `most`
    training images, drawn with `seed`, stand for the set: a 50k x 50k distance matrix
    would not fit). Near 1: F1 reproduces its training images; near 0: it generalises
    (or has not fitted)."""
    pick = torch.randperm(len(train), generator=rng.generator("diagnostics", seed))[:most]
    sample = train[pick].flatten(1).double()
    between = torch.cdist(sample, sample)
    between.fill_diagonal_(float("inf"))
    typical = between.min(dim=1).values.median()
    nearest = torch.cdist(generated.flatten(1).double(), train.flatten(1).double()).min(dim=1)
    return (nearest.values < typical).double().mean().item()


def diagnostics(
    rows: list[dict], fit_loss: float | None, near: float, capped: dict[str, int], m: int
):
    """[{diagnostic, value, meaning}] of a run: its result rows, F1's training loss relative
    to L_null (None: not recorded), its `nearest_share`, and per method the unlearnings of
    its m items that hit the step cap (methods that record it)."""
    out = []
    for r in rows:
        if r["subset"] == "target":
            out.append({
                "diagnostic": f"drift: {r['metric']} of originals to random-removal regenerations",
                "value": r["mean_similarity_random"],
                "meaning": "how much regeneration changes whatever is removed (the noise the "
                "method's effect must stand out from); a better-fitted F1 (pretrain.steps or "
                "pretrain.epochs) and common random numbers "
                "(retrain.common_random_numbers) keep it near identical",
            })  # fmt: skip
        else:
            out.append({
                "diagnostic": f"control items' AUC, {r['metric']} (two-sided p {r['p_value']:.2g})",
                "value": r["auc"],
                "meaning": "items that were not attributed: near 0.5 when removal changes only "
                "what it should; far from it, the retraining itself moves every regeneration",
            })  # fmt: skip
    if fit_loss is not None:
        out.append({
            "diagnostic": "fit: F1's training loss / L_null (the same draws)",
            "value": fit_loss,
            "meaning": "1 = no better than an untrained network; the lower, the more F1 has "
            "learned its training set (pretrain.steps or pretrain.epochs, model width)",
        })  # fmt: skip
    out.append({
        "diagnostic": "fit: share of generations nearer a training image than training "
        "images are to each other",
        "value": near,
        "meaning": "near 1: F1 reproduces training images (memorisation, where pixel "
        "similarity suffices); near 0: it generalises, or has not fitted",
    })  # fmt: skip
    for method, n in capped.items():
        out.append({
            "diagnostic": f"{method}: unlearnings that hit method.max_steps",
            "value": n,
            "meaning": f"of {m} items, unlearning stopped at the cap before its stop rule; "
            "many: raise method.max_steps or the unlearning learning rate",
        })  # fmt: skip
    return out


def markdown(by_seed: dict[int, list[dict]]) -> str:
    """The diagnostics of one run or of several pooled ones (by seed) as a section under
    results.md's table: each with its value per seed and what it means."""
    runs = {seed: {d["diagnostic"]: d for d in diags} for seed, diags in by_seed.items() if diags}
    if not runs:
        return ""
    lines = []
    for name, first in next(iter(runs.values())).items():
        values = [f"**{d[name]['value']:.3g}**" + (f" (seed {s})" if len(runs) > 1 else "")
                  for s, d in runs.items() if name in d]  # fmt: skip
        lines.append(f"- {name}: {', '.join(values)}. {first['meaning']}.")
    return "\nDiagnostics of the setup:\n" + "\n".join(lines) + "\n"
