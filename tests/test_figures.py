"""Figures that read on their own: upscaled, labelled grids; labelled plots."""

import torch
from PIL import Image

from mucs_pipeline.evaluation import figures


def test_small_images_are_upscaled_by_whole_pixels():
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    big = figures.upscale(images, n_columns=2)  # a row of 2 tiles must reach 256 px
    assert big.shape == (2, 1, 128, 128)
    blocks = big.unfold(2, 16, 16).unfold(3, 16, 16)  # (2, 1, 8, 8, 16, 16)
    assert torch.equal(blocks.amin((-2, -1)), images) and torch.equal(blocks.amax((-2, -1)), images)
    assert figures.upscale(torch.zeros(1, 3, 64, 64), n_columns=20).shape[-1] == 64


def test_grids_have_row_labels_and_captions(tmp_path):
    rows = [torch.rand(2, 1, 8, 8) * 2 - 1 for _ in range(3)]
    figures.save_grid(rows, tmp_path / "plain.png")
    captions = [["item 0", "item 1"], ["ssim 0.9", "ssim 0.8"], ["ssim 1.0", "ssim 1.0"]]
    figures.save_grid(rows, tmp_path / "labelled.png", ["original", "mucs", "random"], captions)
    plain, labelled = Image.open(tmp_path / "plain.png"), Image.open(tmp_path / "labelled.png")
    assert plain.width >= 2 * 128 and plain.height >= 3 * 128  # >= 256 px per row of two
    assert labelled.width > plain.width + 30  # the row labels, left of the images
    assert labelled.height > plain.height + 30  # a caption line under each row


def _capture(monkeypatch) -> list:
    figs = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, dpi=120: figs.append(fig))
    return figs


def test_trajectories_show_l_null_and_the_stop_line(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    curves = [torch.tensor([[1.0, 0.5], [0.9, 0.8], [0.8, 0.96]])] * 2
    figures.trajectories(curves, 1.0, tmp_path / "t.png", stop_ratio=0.95)
    (fig,) = figs
    left, right = fig.axes
    assert left.get_ylabel() and right.get_ylabel() and right.get_xlabel() == "unlearning step"
    legend = [t.get_text() for t in right.get_legend().get_texts()]
    assert "L_null = 1" in legend and "stop: 0.95 L_null" in legend
    assert sorted(line.get_ydata()[0] for line in right.lines[-2:]) == [0.95, 1.0]


def test_the_report_draws_trajectories_of_scores_saved_before_l_null_was_in_them(
    tmp_path, monkeypatch
):
    from omegaconf import OmegaConf

    from mucs_pipeline.attribution.mucs import MUCS

    figs = _capture(monkeypatch)
    old = {"trajectories": [torch.tensor([[1.0, 0.5], [0.9, 0.8]])]}  # no "loss_null"
    MUCS.figures(OmegaConf.create({"stop_ratio": 0.95}), old, tmp_path)
    (fig,) = figs
    assert len(fig.axes[1].lines) == 1  # the item's curve, no L_null or stop line


def test_histograms_have_a_y_label_and_the_auc_and_p_in_the_title(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    sims = {
        "random": {"ssim": torch.tensor([0.9, 0.95, 0.97, 0.99])},
        "mucs": {"ssim": torch.tensor([0.7, 0.8, 0.92, 0.96])},
    }
    figures.similarity_distributions(sims, "random", "ssim", tmp_path / "h.png")
    (ax,) = figs[0].axes
    assert ax.get_ylabel() == "generated items"
    assert ax.get_title() == "mucs: AUC 0.812, p = 0.1"
