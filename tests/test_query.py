"""Query mode (`+query=folder`): the user's images attributed with a trained model."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import MICRO, make_cfg, run_main, write_coco
from PIL import Image

QUERY = "+query=folder"


def save_png(x: torch.Tensor, path, side: int | None = None) -> None:
    """A (1, H, W) image in [-1, 1] as a greyscale PNG, upscaled (nearest) to `side`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = ((x[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    img = Image.fromarray(pixels, "L")
    img.resize((side, side), Image.NEAREST).save(path) if side else img.save(path)


def read_csv(runs, method: str) -> list[dict]:
    (path,) = runs.glob(f"*/seed0/query/*/{method}/attributions.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained_f1(trained, tmp_path_factory):
    """The shared trained model as an ema.pt, and the overrides that describe it."""
    cfg, data, _, net, _ = trained
    path = tmp_path_factory.mktemp("f1") / "ema.pt"
    torch.save(net.state_dict(), path)
    model = [f"model.{k}={v}" for k, v in cfg.model.items()]
    return data, [*model, f"dataset.subset={len(data)}", f"pretrain.init_from={path}",
                  "++method_settings.num_noises=20", "++method_settings.max_steps=150",
                  "trainer.threads=1"]  # fmt: skip


@pytest.mark.parametrize("method", ["mucs", "pixel", "dtrak"])
def test_a_copy_of_a_training_image_ranks_it_first(
    method, trained_f1, tmp_path, monkeypatch, capsys
):
    data, overrides = trained_f1
    copies = {17: "a.png", 101: "b.png"}  # training index -> query file
    for j, name in copies.items():
        save_png(data.x[j], tmp_path / "q" / str(int(data.labels[j])) / name)
    runs = tmp_path / "runs"
    code, err = run_main(
        monkeypatch, capsys, runs, QUERY, f"query.root={tmp_path / 'q'}", "query.top_k=4",
        f"method={method}", *overrides,
    )  # fmt: skip
    assert code == 0, err
    rows = read_csv(runs, method)
    assert len(rows) == 2 * 4 and {r["method"] for r in rows} == {method}
    for j, name in copies.items():
        mine = [r for r in rows if r["query"].endswith(name)]
        assert [r["rank"] for r in mine] == ["1", "2", "3", "4"]
        # Training item 106 is a near-identical five: at this scale MUCS scores it 1.4%
        # above 101 (test_mucs's standard for copies is the top 1%, here 2 of 200).
        first = 2 if (method, j) == ("mucs", 101) else 1
        assert j in [int(r["train_index"]) for r in mine[:first]], (name, mine[0])
        assert mine[0]["query_condition"] == str(int(data.labels[j]))
        assert mine[0]["train_condition"] == str(int(data.labels[j]))
        assert mine[0]["train_item"].startswith("digits[")
        scores = [float(r["score"]) for r in mine]
        assert scores == sorted(scores, reverse=True)
    figures = sorted(p.name for p in runs.glob(f"*/seed0/query/*/{method}/query*.png"))
    assert len(figures) == 2 and figures[0].startswith("query000_")
    assert not list(runs.glob("*/seed0/retrain")) and not list(runs.glob("*/seed0/generate"))


def test_training_file_paths_and_a_resized_query_with_a_warning(tmp_path, monkeypatch, capsys):
    """A folder dataset: the CSV names training files; a 4x larger copy is resized back."""
    from mucs_pipeline.data.folder import images_under

    train = tmp_path / "train"
    gen = torch.Generator().manual_seed(0)
    for c in range(2):
        for i in range(6):
            save_png(torch.rand(1, 8, 8, generator=gen) * 2 - 1, train / f"c{c}" / f"{i}.png")
    target = images_under(train)[7]  # c1/1.png
    (tmp_path / "q" / "c1").mkdir(parents=True)
    Image.open(target).resize((32, 32), Image.NEAREST).save(tmp_path / "q" / "c1" / "x.png")
    runs = tmp_path / "runs"
    code, err = run_main(
        monkeypatch, capsys, runs, QUERY, f"query.root={tmp_path / 'q'}", "method=pixel",
        "dataset=folder", f"dataset.root={train}", "dataset.resolution=8", "dataset.channels=1",
        "query.top_k=3", "trainer.threads=1",
    )  # fmt: skip
    assert code == 0, err
    rows = read_csv(runs, "pixel")
    assert rows[0]["query"] == "c1/x.png" and rows[0]["train_item"] == str(target)
    assert rows[0]["train_condition"] == "c1" and rows[0]["train_index"] == "7"
    (log,) = runs.glob("*/logs/seed0-pixel/*.log")
    warning = [line for line in log.read_text().splitlines() if "query images are not" in line]
    assert len(warning) == 1 and "1 of 1 query images are not 8x8" in warning[0]
    assert "x.png, 32x32" in warning[0]


def _one_line_exit_2(monkeypatch, capsys, runs, *overrides) -> str:
    code, err = run_main(monkeypatch, capsys, runs, QUERY, *overrides)
    assert code == 2 and len(err) == 1, (code, err)
    assert not list(runs.glob("*/seed0/*")), "nothing is computed"
    return err[0]


def test_an_empty_query_folder_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "q" / "3").mkdir(parents=True)
    (tmp_path / "q" / "notes.txt").write_text("no images here")
    line = _one_line_exit_2(monkeypatch, capsys, tmp_path / "runs", f"query.root={tmp_path / 'q'}")
    assert "holds no images" in line and str(tmp_path / "q") in line


def test_a_query_without_its_class_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    save_png(torch.zeros(1, 8, 8), tmp_path / "q" / "x.png")
    line = _one_line_exit_2(monkeypatch, capsys, tmp_path / "runs", f"query.root={tmp_path / 'q'}")
    assert "x.png" in line and "query.label" in line
    line = _one_line_exit_2(
        monkeypatch, capsys, tmp_path / "runs", f"query.root={tmp_path / 'q'}", "query.label=ten"
    )
    assert "'ten' is not a class" in line


def test_a_coco_query_without_a_caption_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    write_coco(tmp_path / "coco", "train2017", 4)
    write_coco(tmp_path / "coco", "val2017", 3)
    (tmp_path / "q").mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (64, 64)).save(tmp_path / "q" / name)
    coco = ["dataset=coco", f"dataset.root={tmp_path / 'coco'}", "dataset.clip_pretrained=null",
            f"dataset.cache_dir={tmp_path / 'cache'}", f"query.root={tmp_path / 'q'}"]  # fmt: skip
    runs = tmp_path / "runs"
    line = _one_line_exit_2(monkeypatch, capsys, runs, *coco)
    assert "a.jpg" in line and "caption" in line
    line = _one_line_exit_2(monkeypatch, capsys, runs, *coco, "query.captions=[a red bus]")
    assert "b.jpg" in line and "1 captions for 2 images" in line
    (tmp_path / "captions.csv").write_text("file,caption\na.jpg,a red bus\n")
    table = f"query.captions={tmp_path / 'captions.csv'}"
    line = _one_line_exit_2(monkeypatch, capsys, runs, *coco, table)
    assert "b.jpg" in line and "no row" in line


def test_a_mismatched_checkpoint_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from mucs_pipeline.data import build_dataset
    from mucs_pipeline.training import init_model

    cfg = make_cfg(tmp_path, "model.depth=3")
    torch.save(init_model(cfg, build_dataset(cfg.dataset), 0).state_dict(), tmp_path / "f1.pt")
    save_png(torch.zeros(1, 8, 8), tmp_path / "q" / "3" / "x.png")
    line = _one_line_exit_2(
        monkeypatch, capsys, tmp_path / "runs", f"query.root={tmp_path / 'q'}",
        f"pretrain.init_from={tmp_path / 'f1.pt'}",
    )  # fmt: skip
    assert "blocks.2." in line and "which the network has not" in line


def test_the_python_api_returns_the_clis_scores(tmp_path, monkeypatch, capsys):
    from mucs_pipeline.api import load
    from mucs_pipeline.stages.common import dataset

    data = dataset(make_cfg(tmp_path))
    for j in (3, 50):
        save_png(data.x[j], tmp_path / "q" / str(int(data.labels[j])) / f"z{j}.png")
    # MUCS's micro settings through method_settings, which pixel ignores, for both runs.
    settings = ["++method_settings.max_steps=3", "++method_settings.num_noises=10",
                "++method_settings.batch_size=20", "++method_settings.ga_draws=20"]  # fmt: skip
    code, err = run_main(
        monkeypatch, capsys, tmp_path / "cli", QUERY, f"query.root={tmp_path / 'q'}",
        "query.top_k=3", "trainer.threads=1", "method=mucs", *settings,
    )  # fmt: skip
    assert code == 0, err
    cli = [(r["query"], int(r["rank"]), int(r["train_index"]), float(r["score"]))
           for r in read_csv(tmp_path / "cli", "mucs")]  # fmt: skip
    # Computed anew in another runs folder (F1, L_null, the scores), from a folder and from files.
    micro = [o for o in MICRO if not o.startswith("method.")]
    run = load(*micro, *settings, f"paths.runs_dir={tmp_path / 'api'}", "trainer.threads=1")
    for images in (tmp_path / "q", sorted((tmp_path / "q").rglob("*.png"))):
        rows = run.attribute(images, method="mucs", top_k=3)
        assert [(r["query"], r["rank"], r["train_index"], r["score"]) for r in rows] == cli
    assert (run.folder / "attributions.csv").exists()
    # A tensor of images with their classes: pixel's top item is the image itself.
    x = run.data.x[[3, 50]]
    rows = run.attribute(x, method="pixel", top_k=1, labels=data.labels[[3, 50]].tolist())
    assert [r["train_index"] for r in rows] == [3, 50] and rows[0]["query"] == "image 0"


def test_a_coco_query_is_conditioned_on_its_caption(tmp_path, monkeypatch, capsys):
    """Condition attribution ranks the training image whose caption is the query's first."""
    write_coco(tmp_path / "coco", "train2017", 5)
    write_coco(tmp_path / "coco", "val2017", 3)
    (tmp_path / "q").mkdir()
    Image.new("RGB", (64, 64), color=(0, 0, 0)).save(tmp_path / "q" / "black.jpg")
    (tmp_path / "captions.csv").write_text("file,caption\nblack.jpg,picture 3 caption 0\n")
    runs = tmp_path / "runs"
    code, err = run_main(
        monkeypatch, capsys, runs, QUERY, f"query.root={tmp_path / 'q'}", "method=condition",
        f"query.captions={tmp_path / 'captions.csv'}", "query.top_k=2", "trainer.threads=1",
        "dataset=coco", f"dataset.root={tmp_path / 'coco'}", "dataset.clip_pretrained=null",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    assert code == 0, err
    top = read_csv(runs, "condition")[0]
    assert top["query_condition"] == top["train_condition"] == "picture 3 caption 0"
    assert top["train_item"] == str(tmp_path / "coco" / "train2017" / "000000000003.jpg")


def test_plan_true_lists_the_query_units_and_computes_nothing(tmp_path):
    from mucs_pipeline import pipeline
    from mucs_pipeline.data import build_dataset
    from mucs_pipeline.training import init_model

    cfg = make_cfg(tmp_path / "runs", QUERY, f"query.root={tmp_path / 'q'}", "plan=true")
    torch.save(init_model(cfg, build_dataset(cfg.dataset), 0).state_dict(), tmp_path / "f1.pt")
    save_png(torch.zeros(1, 8, 8), tmp_path / "q" / "3" / "x.png")
    cfg.pretrain.init_from = str(tmp_path / "f1.pt")
    rows = pipeline.run(cfg)["query"]["plan"]
    assert [(r["stage"], r["method"]) for r in rows] == [
        ("pretrain", ""),
        ("null_loss", ""),
        ("query", ""),
        ("attribute", "mucs"),
    ]
    assert rows[0]["forwards"] == 0 and rows[3]["forwards"] > 0  # F1 is read, not trained
    assert all(r["state"] == "run" for r in rows)
    assert not (tmp_path / "runs").exists()
