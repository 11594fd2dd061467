import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import CONF, write_cifar_batches, write_coco
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from mucs_pipeline.data import build_dataset
from mucs_pipeline.data.base import DatasetError


def dataset_cfg(name: str, **values):
    """The dataset group as users get it (conf/dataset/<name>.yaml), with some values set."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={name}"]).dataset
    return OmegaConf.merge(cfg, values)


def folder_cfg(root, **values):
    values = {"resolution": 16, **values}
    return dataset_cfg("folder", root=None if root is None else str(root), **values)


def write_images(root, classes=("cat", "dog"), per_class=3):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            # Non-square, differently sized images: the loader center-crops and resizes.
            img = Image.new("RGB", (40 + 4 * i, 30), color=(255 * c, 10 * i, 128))
            img.save(root / name / f"{i}.png")


def test_digits_are_the_real_sklearn_images_scaled_to_unit_range():
    data = build_dataset(dataset_cfg("digits", subset=None))
    assert data.x.shape == (1797, 1, 8, 8)
    assert data.x.min() == -1 and data.x.max() == 1
    assert data.cond.shape == (1797, 10) and torch.equal(data.cond.argmax(1), data.labels)


def test_digits_subset_is_fixed_across_calls():
    cfg = dataset_cfg("digits", conditional=False, subset=50)
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
    with pytest.raises(DatasetError, match="is not a directory"):
        build_dataset(folder_cfg(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class subfolders"):
        build_dataset(folder_cfg(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="dataset.root is not set"):
        build_dataset(folder_cfg(None))


def test_cifar10_reads_the_python_release(tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    cfg = dataset_cfg("cifar10", root=str(tmp_path))
    data = build_dataset(cfg)
    assert data.x.shape == (20, 3, 32, 32) and data.cond is None
    assert data.x[:, 0].eq(1).all() and data.x[0, 1].mean().item() == pytest.approx(20 / 127.5 - 1)
    assert data.labels.tolist()[:5] == [1, 1, 1, 1, 2] and data.class_names[3] == "class3"


def test_cifar10_missing_files_name_the_download(tmp_path):
    cfg = dataset_cfg("cifar10", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        build_dataset(cfg)


def artbench_cfg(root, fmt):
    return dataset_cfg("artbench10", root=str(root), format=fmt)


def test_artbench_python_release_is_resized_and_conditional(tmp_path):
    write_cifar_batches(
        tmp_path / "artbench-10-batches-py", side=128, per_batch=2, meta=("meta", "styles")
    )
    data = build_dataset(artbench_cfg(tmp_path, "python"))
    assert data.x.shape == (10, 3, 64, 64) and data.cond.shape == (10, 10)
    assert torch.equal(data.cond.argmax(1), data.labels) and data.class_names[0] == "class0"


def test_artbench_imagefolder_release(tmp_path):
    for split in ("train", "test"):
        write_images(
            tmp_path / "artbench-10-imagefolder-split" / split, classes=("baroque", "ukiyo_e")
        )
    data = build_dataset(artbench_cfg(tmp_path, "imagefolder"))
    assert data.x.shape == (6, 3, 64, 64) and data.class_names == ["baroque", "ukiyo_e"]
    # Generated items take the styles of test-split items (paper App. A.2).
    assert data.gen_cond.argmax(1).tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(FileNotFoundError, match="artbench-10-imagefolder-split"):
        build_dataset(artbench_cfg(tmp_path / "nowhere", "imagefolder"))


def test_coco_captions_condition_on_clip_text_and_are_cached(tmp_path):
    write_coco(tmp_path / "coco", "train2017", 4)
    write_coco(tmp_path / "coco", "val2017", 3)
    # The real ViT-L-14 text tower, randomly initialised (no download).
    cfg = dataset_cfg(
        "coco",
        root=str(tmp_path / "coco"),
        clip_pretrained=None,
        cache_dir=str(tmp_path / "cache"),
        caption_index=1,
    )
    data = build_dataset(cfg)
    assert data.x.shape == (4, 3, 64, 64) and data.x.min() >= -1 and data.x.max() <= 1
    assert data.cond.shape == (4, 768) and data.gen_cond.shape == (3, 768)
    torch.testing.assert_close(data.cond.norm(dim=1), torch.ones(4))
    assert not torch.allclose(data.cond[0], data.cond[1])
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert cached == ["clip_text", "clip_text", "images"]
    again = build_dataset(cfg)  # from the cache
    assert torch.equal(again.cond, data.cond) and torch.equal(again.x, data.x)


def test_coco_missing_files_name_the_downloads(tmp_path):
    cfg = dataset_cfg("coco", root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="annotations_trainval2017.zip"):
        build_dataset(cfg)


def test_generated_items_take_test_captions(tmp_path):
    from mucs_pipeline.data import ImageData
    from mucs_pipeline.generation import item_plan

    gen_cond = torch.randn(10, 5)
    data = ImageData(
        x=torch.zeros(3, 3, 8, 8), labels=None, cond=torch.zeros(3, 5), gen_cond=gen_cond
    )
    cfg = OmegaConf.create({"seed": 0, "generate": {"num_items": 4, "num_controls": 2}})
    plan = item_plan(cfg, data)
    picked = torch.cat([plan["target"]["labels"], plan["control"]["labels"]])
    assert len(set(picked.tolist())) == 6  # distinct test captions
    assert torch.equal(plan["target"]["cond"], gen_cond[plan["target"]["labels"]])
    tune = item_plan(OmegaConf.merge(cfg, {"generate": {"num_items": 2, "split": "tune"}}), data)
    tune_picked = torch.cat([tune["target"]["labels"], tune["control"]["labels"]])
    assert not set(tune_picked.tolist()) & set(picked.tolist())  # disjoint from the evaluated
    assert not set(tune["target"]["seeds"].tolist()) & set(plan["target"]["seeds"].tolist())
    with pytest.raises(ValueError, match="generation conditions"):  # 2 x 6 tuning > 10
        item_plan(OmegaConf.merge(cfg, {"generate": {"split": "tune"}}), data)
    cfg.generate.num_items = 9
    with pytest.raises(ValueError, match="generation conditions"):
        item_plan(cfg, data)


def test_example_folders_are_reproducible_and_read_as_their_classes(tmp_path):
    """scripts/make_folders.py: the issue-22 folders, from images shipped in installed packages."""
    spec = importlib.util.spec_from_file_location(
        "make_folders", Path(__file__).resolve().parent.parent / "scripts" / "make_folders.py"
    )
    make_folders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_folders)
    for out in ("a", "b"):
        make_folders.main(["--out", str(tmp_path / out), "--per-class", "3"])
    first = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(first) == 8 * 3 + 200
    same = [(tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in first]
    assert all(same)

    photos = build_dataset(folder_cfg(tmp_path / "a" / "photos", resolution=8))
    assert photos.x.shape == (24, 3, 8, 8) and len(photos.class_names) == 8
    assert photos.x.std(dim=(2, 3)).min() > 0  # crops of photographs, not flat colour
    faces = build_dataset(folder_cfg(tmp_path / "a" / "faces", channels=1))
    assert faces.x.shape == (200, 1, 16, 16) and faces.class_names == ["background", "face"]
    assert faces.labels.bincount().tolist() == [100, 100]
    with pytest.raises(SystemExit):  # never writes into a folder that already has images
        make_folders.main(["--out", str(tmp_path / "a")])


def test_a_subset_names_each_item_by_its_place_in_the_dataset(tmp_path):
    """Query output names training items by their index in the dataset's own split: the
    subset keeps those indices, so each name points at the very image (no re-reading)."""
    from sklearn.datasets import load_digits

    from mucs_pipeline.data.folder import images_under, load_image
    from mucs_pipeline.query.output import training_items

    cfg = OmegaConf.create({"dataset": dataset_cfg("digits", subset=50, subset_seed=3)})
    data = build_dataset(cfg.dataset)
    ids, classes = training_items(cfg, data)
    images = torch.tensor(load_digits().images, dtype=torch.float32) / 8.0 - 1.0
    index = [int(name.removeprefix("digits[").removesuffix("]")) for name in ids]
    assert len(set(index)) == 50 and index != list(range(50))
    assert torch.equal(data.x[:, 0], images[index])
    assert classes == [str(int(y)) for y in data.labels]
    write_images(tmp_path)  # a folder: its files, in the order of the items
    folder = OmegaConf.create({"dataset": folder_cfg(tmp_path, subset=4, subset_seed=1)})
    data = build_dataset(folder.dataset)
    files, _ = training_items(folder, data)
    assert len(files) == 4 and files != sorted(map(str, images_under(tmp_path)))[:4]
    read = [load_image(Path(f), 16, 3) for f in files]
    assert all(torch.equal(a, b) for a, b in zip(read, data.x, strict=True))
