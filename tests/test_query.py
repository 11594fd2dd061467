"""Query mode (`+query=folder`): the user's images attributed with a trained model."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import MICRO, make_cfg, run_main, write_coco
from PIL import Image

QUERY = "+query=folder"


def save_png(x: torch.Tensor, path, side: int | None = None, bits: int = 8) -> None:
    """A (1, H, W) image in [-1, 1] as a greyscale PNG of 8 or 16 bits, upscaled
    (nearest) to `side`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    top = 2**bits - 1
    pixels = ((x[0] + 1) * top / 2).round().clamp(0, top).numpy()
    img = Image.fromarray(pixels.astype("uint16" if bits == 16 else "uint8"))
    img.resize((side, side), Image.NEAREST).save(path) if side else img.save(path)


def read_csv(runs, method: str) -> list[dict]:
    (path,) = runs.glob(f"*/seed0/query/*/{method}-*/attributions.csv")
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained_f1(tmp_path_factory):
    """A tiny DiT fitted to 40 digits (400 steps) as an ema.pt, and the overrides that
    describe it. On the 200 items of the shared `trained` model, MUCS's margin between a
    copy's original and its nearest rivals is within 2% and flips with the unlearning
    settings; with 40 items each is fitted closely enough to be told apart."""
    from mucs_pipeline.data import build_dataset
    from mucs_pipeline.models import EDM
    from mucs_pipeline.training import train

    tmp = tmp_path_factory.mktemp("f1")
    cfg = make_cfg(tmp, "dataset.subset=40", "pretrain.steps=400", "model=dit_tiny",
                   "pretrain.ema_decay=0.99")  # fmt: skip
    data = build_dataset(cfg.dataset)
    net = train(cfg, data, EDM(), tmp / "pretrain", steps=cfg.pretrain.steps)
    path = tmp / "ema.pt"
    torch.save(net.state_dict(), path)
    model = [f"model.{k}={v}" for k, v in cfg.model.items()]
    return data, [*model, f"dataset.subset={len(data)}", f"pretrain.init_from={path}",
                  "++method_settings.num_noises=20", "++method_settings.max_steps=150",
                  "trainer.threads=1"]  # fmt: skip


# make test-all: its 400-step F1 costs 20 s; the exact-copy tests of test_baselines and
# test_mucs rank a duplicate first in make test
@pytest.mark.slow
@pytest.mark.parametrize("method", ["mucs", "pixel", "dtrak"])
def test_a_copy_of_a_training_image_ranks_it_first(
    method, trained_f1, tmp_path, monkeypatch, capsys
):
    data, overrides = trained_f1
    copies = {17: "a.png", 31: "b.png"}  # training index -> query file
    for j, name in copies.items():  # 16 bits: a digit's 17 grey levels are not 8-bit values
        save_png(data.x[j], tmp_path / "q" / str(int(data.labels[j])) / name, bits=16)
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
        assert int(mine[0]["train_index"]) == j, (name, mine[0])
        assert mine[0]["query_condition"] == str(int(data.labels[j]))
        assert mine[0]["train_condition"] == str(int(data.labels[j]))
        assert mine[0]["train_item"].startswith("digits[")
        scores = [float(r["score"]) for r in mine]
        assert scores == sorted(scores, reverse=True)
    figures = sorted(p.name for p in runs.glob(f"*/seed0/query/*/{method}-*/query*.png"))
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
    files = sorted((tmp_path / "q").rglob("*.png"))
    for images in (tmp_path / "q", files):
        rows = run.attribute(images, method="mucs", top_k=3)
        assert [(r["query"], r["rank"], r["train_index"], r["score"]) for r in rows] == cli
    assert (run.folder / "attributions.csv").exists()
    # One file: its folder still names its class (pixel: its top item is the image itself).
    (row,) = run.attribute(files[1:], method="pixel", top_k=1)
    assert row["query"] == files[1].name and row["query_condition"] == files[1].parent.name
    assert row["train_index"] == int(files[1].stem[1:])
    # A tensor of images with their classes; method and top_k as given to load():
    # pixel's top item is the image itself.
    run = load(*micro, f"paths.runs_dir={tmp_path / 'api'}", "method=pixel", "query.top_k=1")
    x = run.data.x[[3, 50]]
    rows = run.attribute(x, labels=data.labels[[3, 50]].tolist())
    assert [(r["method"], r["train_index"]) for r in rows] == [("pixel", 3), ("pixel", 50)]
    assert rows[0]["query"] == "image 0"


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
    assert [(r["stage"], r["method"]) for r in rows] == [  # the graph's order up to attribute
        ("pretrain", ""),
        ("query", ""),
        ("null_loss", ""),
        ("attribute", "mucs"),
    ]
    fit = min(cfg.null_loss.batch_size, 120) * cfg.null_loss.num_batches  # F1's fit only
    assert rows[0]["steps"] == 0 and rows[0]["forwards"] == fit  # F1 is read, not trained
    assert rows[3]["forwards"] > 0
    assert rows[1]["forwards"] == 0 and rows[1]["seconds"] == 0  # queries are read, not generated
    assert rows[3]["seconds"] > 0
    assert all(r["state"] == "run" for r in rows)
    assert not (tmp_path / "runs").exists()


def _folder(tmp_path, conditional: bool) -> list[str]:
    """12 random 8x8 training images, in 2 class subfolders or flat; their overrides."""
    gen = torch.Generator().manual_seed(0)
    for i in range(12):
        sub = f"c{i % 2}/" if conditional else ""
        save_png(torch.rand(1, 8, 8, generator=gen) * 2 - 1, tmp_path / "train" / f"{sub}{i}.png")
    return ["dataset=folder", f"dataset.root={tmp_path / 'train'}", "dataset.resolution=8",
            "dataset.channels=1", f"dataset.conditional={str(conditional).lower()}",
            "trainer.threads=1"]  # fmt: skip


def test_a_condition_for_an_unconditional_model_exits_2_with_one_line(
    tmp_path, monkeypatch, capsys
):
    folder = _folder(tmp_path, conditional=False)
    save_png(torch.zeros(1, 8, 8), tmp_path / "q" / "x.png")
    query = [f"query.root={tmp_path / 'q'}", "method=pixel", *folder]
    for given in ("query.label=c1", "query.captions=[a five]"):
        line = _one_line_exit_2(monkeypatch, capsys, tmp_path / "runs", *query, given)
        assert line.count(given.split("=")[0]) == 2 and "unconditional" in line, line


def test_a_query_run_runs_the_stages_it_is_given(tmp_path, monkeypatch, capsys):
    """stages=[pretrain,null_loss] prepares F1 and L_null only; stages=[attribute] then
    attributes with them, logging the queries' unit as `query`; other stages exit 2."""
    from mucs_pipeline.evaluation import figures

    folder = _folder(tmp_path, conditional=True)
    save_png(torch.zeros(1, 8, 8), tmp_path / "q" / "c1" / "x.png")
    runs, query = tmp_path / "runs", [QUERY, f"query.root={tmp_path / 'q'}", "method=pixel"]
    code, err = run_main(monkeypatch, capsys, runs, *query, *folder, "stages=[pretrain,null_loss]")
    assert code == 0, err
    assert {p.name for p in runs.glob("*/seed0/*")} == {"pretrain", "null_loss"}
    labels = []
    monkeypatch.setattr(figures, "save_grid", lambda *a, **k: labels.append(a[3][0][0]))
    code, err = run_main(monkeypatch, capsys, runs, *query, *folder, "stages=[attribute]")
    assert code == 0, err
    assert len(read_csv(runs, "pixel")) == 1 * 10 and labels[0] == "query"  # top_k.png
    text = "".join(log.read_text() for log in runs.glob("*/logs/seed0-pixel/*.log"))
    assert "run query ->" in text and "run generate" not in text
    assert text.count("run pretrain") == text.count("run null_loss") == 1  # the first run's
    other = tmp_path / "other"
    code, err = run_main(monkeypatch, capsys, other, *query, *folder, "stages=[retrain,evaluate]")
    assert code == 2 and err[0] == "invalid config:" and not other.exists()
    assert err[1].startswith("stages=['retrain', 'evaluate']: a query run"), err
