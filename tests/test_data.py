import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from mucs_pipeline.data import build_dataset


def folder_cfg(root, **kw):
    base = {
        "name": "folder",
        "root": None if root is None else str(root),
        "resolution": 16,
        "channels": 3,
        "conditional": True,
        "subset": None,
        "subset_seed": 0,
    }
    return OmegaConf.create({**base, **kw})


def write_images(root, classes=("cat", "dog"), per_class=3):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            # Non-square, differently sized images: the loader center-crops and resizes.
            img = Image.new("RGB", (40 + 4 * i, 30), color=(255 * c, 10 * i, 128))
            img.save(root / name / f"{i}.png")


def test_digits_are_the_real_sklearn_images_scaled_to_unit_range():
    cfg = OmegaConf.create(
        {"name": "digits", "conditional": True, "subset": None, "subset_seed": 0}
    )
    data = build_dataset(cfg)
    assert data.x.shape == (1797, 1, 8, 8)
    assert data.x.min() == -1 and data.x.max() == 1
    assert data.cond.shape == (1797, 10) and torch.equal(data.cond.argmax(1), data.labels)


def test_digits_subset_is_fixed_across_calls():
    cfg = OmegaConf.create({"name": "digits", "conditional": False, "subset": 50, "subset_seed": 0})
    a, b = build_dataset(cfg), build_dataset(cfg)
    assert len(a) == 50 and torch.equal(a.x, b.x) and a.cond is None


def test_folder_with_class_subfolders(tmp_path):
    write_images(tmp_path)
    data = build_dataset(folder_cfg(tmp_path))
    assert data.x.shape == (6, 3, 16, 16)
    assert data.x.min() >= -1 and data.x.max() <= 1
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.class_names == ["cat", "dog"] and data.cond.shape == (6, 2)
    # Red channel: 0 for "cat", 255 for "dog" -> -1 and 1 after scaling.
    assert data.x[0, 0].mean().item() == pytest.approx(-1.0) and data.x[
        3, 0
    ].mean().item() == pytest.approx(1.0)


def test_folder_unconditional_and_greyscale(tmp_path):
    write_images(tmp_path)
    data = build_dataset(folder_cfg(tmp_path, conditional=False, channels=1, resolution=8))
    assert data.x.shape == (6, 1, 8, 8) and data.cond is None and data.labels is None


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        build_dataset(folder_cfg(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        build_dataset(folder_cfg(tmp_path / "empty"))
    with pytest.raises(ValueError, match="dataset.root is not set"):
        build_dataset(folder_cfg(None))
