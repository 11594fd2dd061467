"""Figures that read without the README: labelled image grids, trajectories, histograms."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from mucs_pipeline import artifacts as io

MIN_TILE_PX = 64  # an 8x8 digit is drawn 8x larger: the pixels stay visible, not blurred
MIN_ROW_PX = 256  # a row of few items is still wide enough to read


def upscale(images: torch.Tensor, n_columns: int) -> torch.Tensor:
    """(N, C, H, W) upscaled by an integer factor (nearest neighbour, no new detail) so that
    a tile is >= MIN_TILE_PX and a row of `n_columns` tiles is >= MIN_ROW_PX wide."""
    side = images.shape[-1]
    scale = max(1, math.ceil(MIN_TILE_PX / side), math.ceil(MIN_ROW_PX / (n_columns * side)))
    return F.interpolate(images, scale_factor=scale, mode="nearest") if scale > 1 else images


def save_grid(
    rows: list[torch.Tensor],
    path: Path,
    row_labels: list[str] | None = None,
    captions: list[list[str]] | None = None,
    title: str | None = None,
) -> None:
    """One row per batch of (N, C, H, W) images in [-1, 1], upscaled (nearest), each row
    labelled on the left and each image captioned underneath (`captions[row][column]`)."""
    n_columns = max(len(r) for r in rows)
    tiles = [upscale(r.float().clamp(-1, 1), n_columns) for r in rows]
    _, channels, tile_h, tile_w = tiles[0].shape
    gap, caption_h = 4, (16 if captions else 0)
    height = len(rows) * (tile_h + gap + caption_h) + gap
    width = n_columns * (tile_w + gap) + gap
    canvas = torch.ones(height, width, 3)
    for r, row in enumerate(tiles):
        top = gap + r * (tile_h + gap + caption_h)
        for c, image in enumerate(row):
            left = gap + c * (tile_w + gap)
            rgb = ((image + 1) / 2).expand(3, -1, -1) if channels == 1 else (image + 1) / 2
            canvas[top : top + tile_h, left : left + tile_w] = rgb.permute(1, 2, 0)
    fig = _pyplot().figure(figsize=(width / 100, height / 100))
    ax = fig.add_axes((0, 0, 1, 1))  # the whole figure: one canvas pixel per output pixel
    ax.imshow(canvas.numpy(), interpolation="nearest")
    ax.set_xticks([])
    centers = [gap + r * (tile_h + gap + caption_h) + tile_h / 2 for r in range(len(rows))]
    ax.set_yticks(centers, row_labels or [""] * len(rows), fontsize=9)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for r, row_captions in enumerate(captions or []):
        y = gap + r * (tile_h + gap + caption_h) + tile_h + 1
        for c, text in enumerate(row_captions):
            x = gap + c * (tile_w + gap) + tile_w / 2
            ax.text(x, y, text, ha="center", va="top", fontsize=6.5)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path, dpi=100)  # one canvas pixel per output pixel


def save_top_k(items: torch.Tensor, train_x: torch.Tensor, top, path: Path, kind: str, title: str):
    """One row per item: the item (captioned `kind`), then its top training items
    `top[i]`, each captioned by rank and training index."""
    save_grid(
        [torch.cat([items[i : i + 1], train_x[t]]) for i, t in enumerate(top)],
        path,
        [f"item {i}" for i in range(len(top))],
        [[kind, *[f"#{r + 1}: z{int(j)}" for r, j in enumerate(t)]] for t in top],
        title=title,
    )


def _save(fig, path: Path, dpi: int = 120) -> None:
    """Write a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        io.atomic_write(
            path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        )
    finally:
        plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _figure(n_panels: int, width: float = 3.2, height: float = 2.6):
    plt = _pyplot()
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    return fig, axes[0]


def similarity_distributions(
    sims: dict[str, dict[str, torch.Tensor]], baseline: str, metric: str, path: Path
) -> None:
    """Fig. 2: per method, the similarity histogram after its removal against random's,
    with the AUC and the one-sided U test's p in the title."""
    from matplotlib.ticker import MaxNLocator

    from mucs_pipeline.evaluation.stats import compare

    methods = [m for m in sims if m != baseline]
    fig, axes = _figure(len(methods))
    for ax, method in zip(axes, methods, strict=True):
        values = [sims[baseline][metric].numpy(), sims[method][metric].numpy()]
        lo, hi = min(v.min() for v in values), max(v.max() for v in values)
        bins = torch.linspace(float(lo), float(hi) + 1e-9, 21).numpy()
        ax.hist(values[0], bins=bins, alpha=0.5, label=baseline, color="tab:gray")
        ax.hist(values[1], bins=bins, alpha=0.6, label=method, color="tab:red")
        auc, p = compare(values[1], values[0])
        ax.set_title(f"{method}: AUC {auc:.3f}, p = {p:.2g}", fontsize=9)
        ax.set_xlabel(f"{metric} (original vs regenerated)")
        ax.set_ylabel("generated items")
        ax.legend(fontsize=7, title="removal", title_fontsize=7)
        ax.ticklabel_format(axis="x", useOffset=False)  # no offset text over the label
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path)


def roc_curves(sims: dict[str, dict[str, torch.Tensor]], baseline: str, metric: str, path: Path):
    """ROC of each method's similarities against random's (lower similarity = positive)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, axes = _figure(1, 3.6, 3.4)
    ax = axes[0]
    for method in (m for m in sims if m != baseline):
        s_m, s_r = sims[method][metric].numpy(), sims[baseline][metric].numpy()
        labels = [1] * len(s_m) + [0] * len(s_r)
        score = [-v for v in [*s_m, *s_r]]
        fpr, tpr, _ = roc_curve(labels, score)
        ax.plot(fpr, tpr, label=f"{method} ({roc_auc_score(labels, score):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, {metric}")
    ax.legend(fontsize=7)
    _save(fig, path)


def trajectories(
    curves: list[torch.Tensor], loss_null: float | None, path: Path, stop_ratio: float = 0.95
) -> None:
    """MUCS unlearning, one line per generated item: L_FT, and L_GA against L_null and the
    stop line (unlearning stops once L_GA reaches stop_ratio * L_null)."""
    fig, axes = _figure(2, 4.0, 3.0)
    for i, curve in enumerate(curves):
        label = "one line per item" if i == 0 else None
        axes[0].plot(curve[:, 0].numpy(), alpha=0.6, lw=1, label=label)
        axes[1].plot(curve[:, 1].numpy(), alpha=0.6, lw=1, label=label)
    axes[0].set_title("fine-tuning loss on training items", fontsize=9)
    axes[0].set_ylabel("L_FT (mean over training items)")
    axes[1].set_title("generated item's loss (gradient ascent)", fontsize=9)
    axes[1].set_ylabel("L_GA (mean, clamped at L_null)")
    if loss_null is not None:
        axes[1].axhline(loss_null, ls="--", color="k", lw=1, label=f"L_null = {loss_null:.3g}")
        axes[1].axhline(
            stop_ratio * loss_null, ls=":", color="tab:red", lw=1,
            label=f"stop: {stop_ratio:g} L_null",
        )  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("unlearning step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def lds_scatter(predicted, actual, rho: float, title: str, path: Path) -> None:
    """One query's predicted loss (minus the summed scores of each subset) against its
    measured loss under each subset model: what LDS's Spearman correlation ranks."""
    fig, axes = _figure(1, 3.6, 3.0)
    ax = axes[0]
    ax.scatter(predicted, actual, s=10, color="tab:blue")
    ax.set_title(f"{title}: Spearman {rho:.3f}", fontsize=9)
    ax.set_xlabel("predicted: - sum of the subset's scores")
    ax.set_ylabel("measured loss of the subset model")
    _save(fig, path)


def lds_bars(rows: list[dict], path: Path) -> None:
    """LDS per method with its bootstrap CI, one panel per query set (rows: method,
    query_set, lds, ci_low, ci_high)."""
    sets = list(dict.fromkeys(r["query_set"] for r in rows))
    fig, axes = _figure(len(sets), 4.2, 0.35 * max(4, len(rows) / len(sets)) + 0.8)
    for ax, q in zip(axes, sets, strict=True):
        mine = [r for r in rows if r["query_set"] == q]
        y = range(len(mine))
        values = [r["lds"] for r in mine]
        # BCa's interval can exclude the estimate: no negative error bar
        err = [[max(0.0, v - r["ci_low"]) for v, r in zip(values, mine, strict=True)],
               [max(0.0, r["ci_high"] - v) for v, r in zip(values, mine, strict=True)]]  # fmt: skip
        ax.errorbar(values, list(y), xerr=err, fmt="o", color="tab:red", capsize=3)
        ax.set_yticks(list(y), [r["method"] for r in mine], fontsize=7)
        ax.axvline(0, color="gray", lw=0.8)
        ax.invert_yaxis()
        ax.set_xlabel("LDS (Spearman, mean over queries)")
        ax.set_title(f"{q} queries", fontsize=9)
    _save(fig, path)
