"""Faults a cluster user meets: a full disk, a damaged file, a changed upstream artifact, a
moved runs folder, a mistake in the config or the data. Each ends in the right result or
in one line naming what to fix: never a wrong result, a traceback or a stuck run folder."""

import builtins
import errno
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cfg, run_main, slow_unless
from PIL import Image

from mucs_pipeline import artifacts, pipeline
from mucs_pipeline.data import build_dataset
from mucs_pipeline.generation import MAX_SEED, item_plan, latents_for
from mucs_pipeline.layout import Layout
from mucs_pipeline.report import report, report_comparisons
from mucs_pipeline.validate import validate

# After 12 steps at warmup learning rates a zero-initialised output layer has passed
# almost no gradient upstream, and a retrain without other items can end bit-identical:
# the micro runs of these tests start from PyTorch's default init so every change shows.
FAULTS = ("model.zero_init_output=false",)


def fault_cfg(runs: Path, *overrides: str):
    return make_cfg(runs, *FAULTS, *overrides)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """One finished micro run of MUCS against random; each test changes its own copy."""
    runs = tmp_path_factory.mktemp("clean") / "runs"
    pipeline.run(fault_cfg(runs))
    return runs


@pytest.fixture
def runs(clean, tmp_path) -> Path:
    return shutil.copytree(clean, tmp_path / "runs")


def unit(name: str) -> tuple[str, str | None]:
    """'retrain[mucs]' -> ('retrain', 'mucs'); 'generate' -> ('generate', None)."""
    stage, _, method = name.partition("[")
    return stage, method.rstrip("]") or None


def folder(runs: Path, name: str) -> Path:
    return Layout(fault_cfg(runs)).dir(*unit(name))


def finished(runs: Path) -> dict[str, int]:
    """Each finished unit -> when its manifest was written."""
    times = {}
    for path in runs.rglob("manifest.json"):
        m = json.loads(path.read_text())
        name = f"{m['stage']}[{m['method']}]" if m["method"] else m["stage"]
        times[name] = path.stat().st_mtime_ns
    return times


def digest(value) -> str:
    """A hash of tensors and containers: equal digests, equal values."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.Tensor):
            h.update(f"{x.dtype}{tuple(x.shape)}".encode() + x.contiguous().numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                feed(x[k])
        elif isinstance(x, list | tuple):
            for v in x:
                feed(v)
        else:
            h.update(repr(x).encode())

    feed(value)
    return h.hexdigest()[:16]


def results(runs: Path) -> dict[str, str]:
    """A digest of every unit's results (not its timings), by unit."""
    layout = Layout(fault_cfg(runs))
    d, load = layout.dir, artifacts.load
    out = {
        "pretrain": load(d("pretrain") / "ema.pt"),
        "generate": load(d("generate") / "items.pt"),
        "null_loss": (d("null_loss") / "loss_null.txt").read_text(),
        "evaluate": [load(d("evaluate") / "similarities_target.pt"),
                     (d("evaluate") / "results.csv").read_text()],
    }  # fmt: skip
    for m in layout.methods:
        out[f"attribute[{m}]"] = load(d("attribute", m) / "scores.pt")["scores"]
        out[f"retrain[{m}]"] = [load(d("retrain", m) / f) for f in ("ema.pt", "removed.pt")]
        out[f"regenerate[{m}]"] = load(d("regenerate", m) / "items.pt")
    return {name: digest(value) for name, value in out.items()}


def rewrite(path: Path, change) -> None:
    """Change an artifact as a recomputation with another result would, manifest included."""
    change(path)
    manifest = path.parent / "manifest.json"
    m = json.loads(manifest.read_text())
    m["outputs"][path.name] = artifacts.file_sha256(path)
    manifest.write_text(json.dumps(m))


def scale_weights(path: Path) -> None:
    state = torch.load(path)
    torch.save({k: v * 1.01 if v.is_floating_point() else v for k, v in state.items()}, path)


def flip_images(path: Path) -> None:
    items = torch.load(path)
    for subset in items.values():
        subset["images"] = subset["images"].flip(-1)
    torch.save(items, path)


def negate_scores(path: Path) -> None:
    scores = torch.load(path)
    torch.save({**scores, "scores": -scores["scores"]}, path)


def halve_loss_null(path: Path) -> None:
    """Half of L_null: the clamp min(L(z_hat), L_null) binds and the stop rule comes
    sooner, so MUCS's scores change even in a 3-step micro unlearning."""
    path.write_text(f"{float(path.read_text()) * 0.5!r}\n")


ALL = ["attribute[mucs]", "attribute[random]", "retrain[mucs]", "retrain[random]",
       "regenerate[mucs]", "regenerate[random]", "evaluate"]  # fmt: skip
# The unit whose artifact changes, its file, how it changes, and its dependants: exactly
# what reruns, the first being built from the changed unit itself.
# Regeneration redraws the generate stage's seeds through the retrained model and reads
# nothing else: where retrain[random] recomputes the same model (random scores ignore F1,
# the generated items and L_null), regenerate[random] stays.
BUT_REGENERATE_RANDOM = [u for u in ALL if u != "regenerate[random]"]
BOUNDARIES = {
    "pretrain": ("ema.pt", scale_weights, ["generate", *BUT_REGENERATE_RANDOM]),
    "generate": ("items.pt", flip_images, BUT_REGENERATE_RANDOM),
    "null_loss": ("loss_null.txt", halve_loss_null, BUT_REGENERATE_RANDOM),
    "attribute[mucs]": (
        "scores.pt",
        negate_scores,
        ["retrain[mucs]", "regenerate[mucs]", "evaluate"],
    ),
    "retrain[mucs]": ("ema.pt", scale_weights, ["regenerate[mucs]", "evaluate"]),
    "regenerate[random]": ("items.pt", flip_images, ["evaluate"]),
}


@pytest.mark.parametrize("changed", slow_unless(list(BOUNDARIES), ["regenerate[random]"]))
def test_a_changed_upstream_artifact_recomputes_exactly_its_dependants_from_scratch(
    runs, tmp_path, changed, caplog
):
    name, change, dependants = BOUNDARIES[changed]
    rewrite(folder(runs, changed) / name, change)
    # What a clean run computes from the changed artifact: its dependants from scratch.
    reference = shutil.copytree(runs, tmp_path / "reference")
    for d in dependants:
        shutil.rmtree(folder(reference, d))
    pipeline.run(fault_cfg(reference))
    before = finished(runs)
    with caplog.at_level(logging.INFO, logger="mucs_pipeline.runner"):
        pipeline.run(fault_cfg(runs))  # checkpoints and finished items of the old inputs remain
    after = finished(runs)
    assert {u for u in after if after[u] != before[u]} == set(dependants)
    said = [re.match(r"recompute (\S+) from scratch: its input (.+) changed", r.getMessage())
            for r in caplog.records]  # fmt: skip
    said = {m[1]: m[2].split(", ") for m in said if m}  # unit -> the inputs that changed
    assert set(said) == set(dependants)
    assert changed in said[dependants[0]]
    assert results(runs) == results(reference)


class FullDisk:
    """A write to a file that fills the disk: half of the first bytes land, then ENOSPC.

    It has no file descriptor, so that shutil's copies also go through `write`."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.f.name)

    def fileno(self):
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fill_disk(mp, runs: Path, name: str, nth: int = 1) -> None:
    """The disk holding `runs` fills up during the nth write of a file whose name contains
    `name` (temporary files included). The system temp folder is on another disk, as on
    a cluster node, so that a file moved from it into `runs` is copied."""
    writes = itertools.count(1)

    def hit(path) -> bool:
        p = Path(os.fsdecode(path))
        return name in p.name and runs in p.parents and next(writes) == nth

    real_open, real_save, real_rename = builtins.open, torch.save, os.rename

    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, str | os.PathLike) and set(mode) & set("wax") and hit(file):
            return FullDisk(f)
        return f

    def save(obj, f, *args, **kwargs):  # torch writes a path from C++, not through open()
        if isinstance(f, str | os.PathLike) and hit(f):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with real_open(f, "wb") as out:
                FullDisk(out).write(buffer.getvalue())
        return real_save(obj, f, *args, **kwargs)

    node_tmp = runs.parent / "node-tmp"
    node_tmp.mkdir(exist_ok=True)

    def rename(src, dst, *args, **kwargs):
        if node_tmp in Path(os.fsdecode(src)).parents and runs in Path(os.fsdecode(dst)).parents:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src)
        return real_rename(src, dst, *args, **kwargs)

    mp.setattr(builtins, "open", open_)
    mp.setattr(io, "open", open_)
    mp.setattr(torch, "save", save)
    mp.setattr(os, "rename", rename)
    mp.setattr(tempfile, "tempdir", str(node_tmp))


# (the file whose write meets the full disk, which of its writes, the stage that writes it)
WRITES = {
    "checkpoint": ("last.ckpt", 2, "pretrain"),  # the first checkpoint is resumed from
    "torch artifact": ("items.pt", 1, "generate"),
    "finished item": ("item0001.pt", 1, "attribute"),
    "cache": ("f1_losses", 1, "attribute"),
    "manifest": ("manifest.json", 1, "null_loss"),
    "text": ("loss_null.txt", 1, "null_loss"),
    "table": ("results.csv", 1, "evaluate"),
    "figure": ("similarity_ssim.png", 1, "evaluate"),
    "run record": ("run.json", 1, "evaluate"),
}


@pytest.mark.parametrize("kind", slow_unless(list(WRITES), ["checkpoint", "manifest", "text"]))
def test_a_full_disk_leaves_no_damaged_file_and_the_rerun_finishes_the_run(
    clean, runs, kind, monkeypatch
):
    name, nth, stage = WRITES[kind]
    shutil.rmtree(runs / "digits" / "seed0" / "cache")  # so that the cache is written
    with monkeypatch.context() as mp:
        fill_disk(mp, runs, name, nth)
        with pytest.raises(OSError) as err:
            pipeline.run(fault_cfg(runs, f"stages=[{stage}]", "force=true"))
        assert err.value.errno == errno.ENOSPC
    assert not [p for p in runs.rglob("*") if ".tmp" in p.name]  # no part of a file is left
    pipeline.run(fault_cfg(runs))  # space was freed: the rerun resumes and finishes
    assert results(runs) == results(clean)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def mistype(path: Path) -> None:
    path.write_text(json.dumps({"key": 1, "outputs": ["scores.pt"]}))


# By kind of artifact, the file damaged (under runs/digits/seed0) and, for files that a
# resumed unit reads back, that unit's files which a killed run had not written yet.
DAMAGED = {
    "stage output": ("retrain/mucs-*/ema.pt", []),
    "text output": ("null_loss/*/loss_null.txt", []),
    "manifest": ("generate/*/manifest.json", []),
    "checkpoint": ("retrain/mucs-*/checkpoints/last.ckpt", ["retrain/mucs-*/manifest.json",
                                                             "retrain/mucs-*/ema.pt"]),
    "finished item": ("attribute/mucs-*/items/item0001.pt", ["attribute/mucs-*/manifest.json",
                                                              "attribute/mucs-*/scores.pt"]),
    "cache": ("cache/*/f1_losses-*.pt", ["attribute/mucs-*/manifest.json",
                                         "attribute/mucs-*/scores.pt", "attribute/mucs-*/items"]),
}  # fmt: skip
DAMAGES = [(kind, damage) for kind in DAMAGED for damage in (truncate, garbage)]
DAMAGES.append(("manifest", mistype))


@pytest.mark.parametrize(
    "kind,damage",
    slow_unless(
        DAMAGES,
        [d for d in DAMAGES if d[0] not in ("finished item", "cache")],
        ids=[f"{k}-{d.__name__}" for k, d in DAMAGES],
    ),
)
def test_a_damaged_file_is_recomputed_with_a_warning_or_named_in_one_line_with_strict(
    clean, runs, kind, damage, monkeypatch, capsys, caplog
):
    pattern, unwritten = DAMAGED[kind]
    root = runs / "digits" / "seed0"
    for lost in [p for u in unwritten for p in root.glob(u)]:
        shutil.rmtree(lost) if lost.is_dir() else lost.unlink()
    (path,) = root.glob(pattern)
    damage(path)
    code, stderr = run_main(monkeypatch, capsys, runs, *FAULTS, "strict=true")
    assert code == 2
    (line,) = [line for line in stderr if str(path) in line]
    assert line.startswith(f"{path} is damaged") and "strict=true stops here" in line
    with caplog.at_level(logging.WARNING):
        pipeline.run(fault_cfg(runs))
    assert f"{path} is damaged" in caplog.text
    assert results(runs) == results(clean)


def test_a_crafted_pickle_in_a_run_folder_is_refused_in_one_line_naming_it(
    runs, monkeypatch, capsys, tmp_path
):
    marker, path = tmp_path / "pwned", folder(runs, "pretrain") / "ema.pt"
    payload = type("Payload", (), {"__reduce__": lambda self: (os.system, (f"touch {marker}",))})
    rewrite(path, lambda p: torch.save({"weight": payload()}, p))
    code, stderr = run_main(monkeypatch, capsys, runs, *FAULTS)
    assert code == 2 and not marker.exists()
    (line,) = [line for line in stderr if str(path) in line]
    assert "was refused as unsafe" in line and "weights_only" not in line


def table(out: Path) -> list[str]:
    """The rows of a results.csv, in a fixed order."""
    return sorted((out / "results.csv").read_text().splitlines())


@pytest.mark.slow
def test_a_moved_runs_folder_reports_its_own_artifacts_not_the_old_location(runs, tmp_path):
    (before,) = report(runs)
    (tables,) = report_comparisons(runs)
    tables = comparison(tables)
    moved = shutil.copytree(runs, tmp_path / "moved")
    shutil.rmtree(moved / "report")
    # The old location still exists, with other results: the report must not read them.
    similarities = folder(runs, "evaluate") / "similarities_target.pt"
    torch.save({m: {k: -v for k, v in s.items()} for m, s in torch.load(similarities).items()},
               similarities)  # fmt: skip
    for scores in runs.rglob("scores.pt"):
        negate_scores(scores)
    (after,) = report(moved)
    assert table(after) == table(before)
    (after_tables,) = report_comparisons(moved)
    assert comparison(after_tables) == tables
    assert json.loads((after / "runs.json").read_text()) == [
        folder(moved, "evaluate").relative_to(moved).as_posix()
    ]


def comparison(out: Path) -> dict[str, str]:
    """The tables and figures of a comparison report, by file name."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".csv", ".png")}


@pytest.mark.slow
def test_the_report_works_from_another_directory(clean, tmp_path, monkeypatch):
    (there := tmp_path / "there").mkdir()
    shutil.copytree(clean, there / "runs")
    monkeypatch.chdir(there)
    # A relative paths.runs_dir, as the default `runs` is: its run.json is written here.
    pipeline.run(fault_cfg(Path("runs"), "stages=[evaluate]", "force=true"))
    (elsewhere := tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(elsewhere)
    (out,) = report(Path("../there/runs"))
    assert table(out) == table(folder(clean, "evaluate"))
    (out,) = report_comparisons(Path("../there/runs"))
    assert {"table1_auc.csv", "fig_regenerations.png", "fig_top_k_mucs.png"} <= set(comparison(out))


def test_the_report_where_the_training_data_is_not_has_every_figure_but_the_top_k(runs, caplog):
    info_path = folder(runs, "evaluate") / "run.json"
    info = json.loads(info_path.read_text())
    info["dataset_cfg"] = {**info["dataset_cfg"], "name": "folder", "root": "/no/such/images"}
    info_path.write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING, logger="mucs_pipeline.evaluation"):
        (out,) = report_comparisons(runs)
    assert "no top-k figures: the training set cannot be read here" in caplog.text
    assert "fig_regenerations.png" in comparison(out) and "fig_top_k_mucs.png" not in comparison(
        out
    )


def test_an_unreadable_run_record_is_skipped_with_a_warning_naming_it(runs, caplog):
    (good,) = report(runs)
    shutil.rmtree(runs / "report")
    bad = folder(runs, "evaluate").with_name("pixel-0123456789ab")
    shutil.copytree(folder(runs, "evaluate"), bad)
    (bad / "run.json").write_text('{"name": "digits", "seed": ')
    with caplog.at_level(logging.WARNING, logger="mucs_pipeline.evaluation"):
        (out,) = report(runs)
    assert table(out) == table(good)
    assert f"skipping {bad / 'run.json'}: not valid JSON" in caplog.text
    # With no usable run there is no report, and no part of one.
    shutil.rmtree(runs / "report")
    (folder(runs, "evaluate") / "run.json").write_text("[]")
    with pytest.raises(SystemExit, match="no finished evaluate stage"):
        report(runs)
    assert not (runs / "report").exists()


# A mistake in the config: (overrides, the start of the one line that names it).
MISTAKES = [
    (["method.lam=inf"], "method.lam=inf: expected a finite number"),
    (["model.conv_strides=[1,0]"], "model.conv_strides=[1, 0]: expected a list of integers > 0"),
    (["model.conv_channels=[8,-8]"], "model.conv_channels=[8, -8]: expected a list of integers"),
    (["model.conv_strides=[1]"], "model.conv_strides=[1]: expected one stride per entry"),
    (["generate.batch_size=0"], "generate.batch_size=0: expected an integer > 0"),
    (["pretrain.checkpoint_every=-5"], "pretrain.checkpoint_every=-5: expected an integer > 0"),
    (["trainer.threads=0"], "trainer.threads=0: expected an integer > 0"),
    (["dataset.subset=0"], "dataset.subset=0: expected an integer > 0"),
    (["dataset.channels=2"], "dataset.channels=2: expected 1 (greyscale) or 3 (RGB)"),
    (["dataset=folder"], "dataset.root=None: expected the folder of images"),
    (["dataset=folder", "dataset.root={file}"], "dataset.root='{file}': a file, expected a folder"),
    ([f"seed={MAX_SEED + 1}"], f"seed={MAX_SEED + 1}: expected an integer in [0, {MAX_SEED}]"),
    (["stages=[]"], "stages=[]: nothing to run"),
    (["metric.names=[]"], "metric.names=[]: expected some of"),
    (["method=random"], "method.name='random': random removal is the null every method"),
    (["nope=1"], "Could not override 'nope'."),
    (["method=nope"], "In 'config': Could not find 'method/nope'"),
]


@pytest.mark.parametrize("overrides,message", MISTAKES, ids=[" ".join(o) for o, _ in MISTAKES])
def test_a_mistake_exits_2_with_one_line_before_writing_anything(
    tmp_path, overrides, message, monkeypatch, capsys
):
    file = tmp_path / "images.zip"
    file.write_bytes(b"")
    runs = tmp_path / "runs"
    overrides = [o.replace("{file}", str(file)) for o in overrides]
    message = message.replace("{file}", str(file))
    code, stderr = run_main(monkeypatch, capsys, runs, *overrides)
    assert code == 2
    assert len([line for line in stderr if line.startswith(message)]) == 1
    assert not runs.exists()  # not even Hydra's logs


def test_an_empty_runs_dir_writes_nothing_under_root(tmp_path, monkeypatch, capsys):
    code, stderr = run_main(monkeypatch, capsys, tmp_path, "paths.runs_dir=")
    assert code == 2 and "paths.runs_dir='': expected the folder" in stderr[-1]
    assert not Path("/digits").exists()


def test_the_largest_accepted_seed_gives_valid_item_seeds(tmp_path):
    """The bound of the seed check is tight: MAX_SEED passes it, and its item seeds work."""
    cfg = make_cfg(tmp_path, f"seed={MAX_SEED}", "generate.split=tune", "generate.num_items=49999",
                   "generate.num_controls=49999", "dataset.conditional=false",
                   "generate.cfg_weight=1.0")  # fmt: skip
    validate(cfg)
    data = build_dataset(cfg.dataset)
    last = item_plan(cfg, data)["control"]["seeds"][-1:]
    assert latents_for(last, (1, 8, 8)).shape == (1, 1, 8, 8)


def test_a_read_only_runs_folder_is_one_line(tmp_path, monkeypatch, capsys):
    runs, real_mkdir = tmp_path / "runs", os.mkdir

    def mkdir(path, *args, **kwargs):  # as a read-only folder refuses (root ignores modes)
        if runs in Path(os.fsdecode(path)).parents or Path(path) == runs:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    code, stderr = run_main(monkeypatch, capsys, runs)
    assert code == 2
    assert stderr[-1].startswith(f"{runs}") and "Permission denied; expected folders" in stderr[-1]


def image_folder(root: Path, n: int = 3) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (12, 10), (40 * i, 100, 200)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("broken", ["truncated", "corrupt", "bomb", "empty folder"])
def test_a_broken_image_folder_stops_before_any_compute_naming_the_file(
    tmp_path, broken, monkeypatch, capsys
):
    root = image_folder(tmp_path / "images")
    bad = root / "b" / "1.png"
    if broken == "truncated":
        truncate(bad)
    elif broken == "corrupt":
        garbage(bad)
    elif broken == "bomb":  # more pixels than PIL's limit, as a decompression bomb has
        Image.new("RGB", (40, 40)).save(bad)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the other images have 120
    else:
        shutil.rmtree(root)
        root.mkdir()
        bad = root
    runs = tmp_path / "runs"
    code, stderr = run_main(monkeypatch, capsys, runs, "dataset=folder", f"dataset.root={root}",
                            "dataset.resolution=8", "dataset.subset=null")  # fmt: skip
    assert code == 2
    assert len([line for line in stderr if str(bad) in line]) == 1
    assert not (runs / "folder" / "seed0").exists()


def test_files_that_are_not_images_are_skipped_with_one_warning_counting_them(tmp_path, caplog):
    root = image_folder(tmp_path / "images")
    (root / "README.txt").write_text("my images")
    (root / "a" / "labels.json").write_text("{}")
    cfg = make_cfg(tmp_path, "dataset=folder", f"dataset.root={root}", "dataset.resolution=8",
                   "dataset.subset=null").dataset  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert len(build_dataset(cfg)) == 6
    (record,) = caplog.records
    assert record.getMessage().endswith("skipped 2 files that are not images (.json, .txt)")


def test_images_of_every_mode_load_at_their_true_values(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    grey16 = np.full((8, 8), 32768, dtype=np.uint16)  # half of the 16-bit range
    Image.fromarray(grey16).save(root / "a_16bit.png")
    palette = Image.new("P", (8, 8))
    palette.putpalette([200, 100, 50] * 256)
    palette.save(root / "b_palette.png")
    Image.new("LA", (8, 8), (150, 7)).save(root / "c_la.png")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(root / "d_cmyk.tiff")  # white
    Image.new("1", (8, 8), 1).save(root / "e_1bit.png")
    cfg = make_cfg(tmp_path, "dataset=folder", f"dataset.root={root}", "dataset.resolution=8",
                   "dataset.conditional=false", "dataset.subset=null").dataset  # fmt: skip
    x = (build_dataset(cfg).x + 1) * 127.5  # back to 0-255, (5, 3, 8, 8)
    expected = [[32768 / 65535 * 255] * 3, [200, 100, 50], [150] * 3, [255] * 3, [255] * 3]
    assert torch.allclose(x.mean((2, 3)), torch.tensor(expected), atol=0.01)
