"""Image grids: originals next to their regenerations."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import save_image

from mucs_pipeline import artifacts as io


def save_grid(rows: list[torch.Tensor], path: Path, min_size: int = 32) -> None:
    """One row per batch of (N, C, H, W) images in [-1, 1]; small images upscaled (nearest)."""
    images = torch.cat(rows)
    scale = max(1, min_size // images.shape[-1])
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    grid = (images + 1) / 2
    io.atomic_write(
        path,
        lambda tmp: save_image(
            grid, tmp, nrow=len(rows[0]), padding=2, pad_value=1.0, format="png"
        ),
    )


def _save(fig, path: Path) -> None:
    """Write a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        io.atomic_write(
            path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        )
    finally:
        plt.close(fig)


def _figure(n_panels: int, width: float = 3.2, height: float = 2.6):
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    return fig, axes[0]


def similarity_distributions(
    sims: dict[str, dict[str, torch.Tensor]], baseline: str, metric: str, path: Path
) -> None:
    """Fig. 2: per method, the similarity histogram after its removal against random's."""
    methods = [m for m in sims if m != baseline]
    fig, axes = _figure(len(methods))
    for ax, method in zip(axes, methods, strict=True):
        values = [sims[baseline][metric].numpy(), sims[method][metric].numpy()]
        lo, hi = min(v.min() for v in values), max(v.max() for v in values)
        bins = torch.linspace(float(lo), float(hi) + 1e-9, 21).numpy()
        ax.hist(values[0], bins=bins, alpha=0.5, label=baseline, color="tab:gray")
        ax.hist(values[1], bins=bins, alpha=0.6, label=method, color="tab:red")
        ax.set_title(method)
        ax.set_xlabel(metric)
        ax.legend(fontsize=7)
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


def trajectories(curves: list[torch.Tensor], loss_null: float | None, path: Path) -> None:
    """MUCS unlearning: L_FT and clamped L_GA per step, one line per generated item."""
    fig, axes = _figure(2)
    for curve in curves:
        axes[0].plot(curve[:, 0].numpy(), alpha=0.6)
        axes[1].plot(curve[:, 1].numpy(), alpha=0.6)
    axes[0].set_title("fine-tuning loss L_FT")
    axes[1].set_title("generated item's loss L_GA")
    if loss_null is not None:
        axes[1].axhline(loss_null, ls=":", color="k", label="L_null")
        axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("unlearning step")
    _save(fig, path)
