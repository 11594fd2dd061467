"""Shared fixtures: configs composed from the real conf/ tree with micro overrides."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image

CONF = Path(__file__).resolve().parent.parent / "conf"

# What the tests run: `debug=micro` (conf/debug/micro.yaml, the README's check of a setup:
# a few optimizer steps, two items, a small noise bank, for every method), logged to CSV.
MICRO = ["debug=micro", "logger=csv", "trainer.progress_bar=false"]


def micro(overrides) -> list[str]:
    """MICRO for these overrides. Hydra applies `+experiment=` after `debug=micro`, so an
    experiment's values would win over debug's: with one, debug's values (bar
    method_settings, which no experiment sets) also go on the command line, which wins."""
    if not any(o.startswith("+experiment=") for o in overrides):
        return MICRO
    debug = OmegaConf.to_container(OmegaConf.load(CONF / "debug" / "micro.yaml"))
    debug.pop("method_settings")

    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}={json.dumps(value)}"

    return [*MICRO, *leaves(debug)]


def slow_unless(values, fast, ids=None) -> list:
    """Parametrize cases: those of `values` not in `fast` marked slow, so that `make test`
    keeps one or a few cases of each code path and `make test-all` runs them all. A tuple
    value is the arguments of a test with several parameters."""
    ids = ids or [None] * len(values)
    return [
        pytest.param(*(v if isinstance(v, tuple) else (v,)), id=i,
                     marks=() if v in fast else pytest.mark.slow)
        for v, i in zip(values, ids, strict=True)
    ]  # fmt: skip


def cli_command(runs: Path, *args: str) -> list[str]:
    """`python -m mucs_pipeline` with the micro settings, writing under `runs`."""
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags come before overrides
    overrides = [a for a in args if not a.startswith("-")]
    return [sys.executable, "-m", "mucs_pipeline", *flags, *micro(overrides),
            f"paths.runs_dir={runs}", *overrides]  # fmt: skip


def run_cli(runs: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(runs, *args), cwd=CONF.parent, capture_output=True, text=True, timeout=900
    )


def run_main(monkeypatch, capsys, runs: Path, *overrides: str) -> tuple[int, list[str]]:
    """`python -m mucs_pipeline <micro> <overrides>` writing under `runs`, in this process
    (faster than run_cli, and monkeypatches apply): (exit status, stderr lines)."""
    from mucs_pipeline.__main__ import main

    monkeypatch.setattr(
        sys, "argv", ["mucs_pipeline", *micro(overrides), f"paths.runs_dir={runs}", *overrides]
    )
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # what main() sets, undone after the test
    capsys.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code
    finally:  # Hydra pointed the root logger at this call's captured output
        root.handlers[:], root.level = handlers, level
    return code, capsys.readouterr().err.splitlines()


def make_cfg(tmp_path: Path, *overrides: str) -> DictConfig:
    """The real config with `debug=micro`, writing under tmp_path, its `method_settings`
    applied as a run applies them. A model chosen with `model=` keeps its own size."""
    from mucs_pipeline.method_config import (
        apply_method_settings,
        apply_model_settings,
        drop_settings_set_on_the_method,
    )

    overrides = (*micro(overrides), f"paths.runs_dir={tmp_path}", *overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    drop_settings_set_on_the_method(cfg, overrides)
    apply_method_settings(cfg)
    if not any(o.startswith("model=") for o in overrides):  # else not debug=micro's tiny DiT
        apply_model_settings(cfg)
    return cfg


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(cfg, data, edm, F1, tmp): the default tiny DiT trained long enough to tell
    individual digits apart; shared by the MUCS and baseline tests."""
    from mucs_pipeline.data import build_dataset
    from mucs_pipeline.models import EDM
    from mucs_pipeline.training import train

    tmp = tmp_path_factory.mktemp("trained")
    cfg = make_cfg(
        tmp,
        "dataset.subset=200",
        "pretrain.steps=400",
        "model=dit_tiny",
        "pretrain.ema_decay=0.99",  # an EMA horizon that fits 400 steps
        "method.num_noises=20",
        "method.max_steps=150",
    )
    data, edm = build_dataset(cfg.dataset), EDM()
    net = train(cfg, data, edm, tmp / "pretrain", steps=cfg.pretrain.steps)
    return cfg, data, edm, net, tmp


def context(trained, loss_null: float, cache_dir, **kwargs):
    """A method Context around the trained fixture."""
    from mucs_pipeline.attribution import Context

    cfg, data, edm, f1, _ = trained
    return Context(
        cfg=cfg,
        data=data,
        diffusion=edm,
        net=f1,
        loss_null=loss_null,
        device=torch.device("cpu"),
        cache_dir=cache_dir,
        **kwargs,
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Two torch threads before any fixture of a test is set up, whatever its scope: CPU
    reductions split differently across threads (results differ in the last bit), so a
    shared module- or session-scoped run must be computed at the thread count of the
    tests that compare against it, and a run with trainer.threads=1 must not leak."""
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _torch_seed():
    torch.manual_seed(0)


def perturb(net: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Move the zero-initialised (adaLN-Zero) layers off zero so the output depends on the input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return net


def write_cifar_batches(folder, side=32, per_batch=4, meta=("batches.meta", "label_names")):
    """Pickled batches in the CIFAR release format: {"data": (N, 3*side*side) uint8, "labels"}:
    five training batches and a test batch."""
    folder.mkdir(parents=True)
    for b in range(1, 7):
        data = np.full((per_batch, 3 * side * side), 20 * b, dtype=np.uint8)
        data[:, : side * side] = 255  # red channel saturated
        name = f"data_batch_{b}" if b < 6 else "test_batch"
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [b % 10] * per_batch}, f)
    with open(folder / meta[0], "wb") as f:
        pickle.dump({meta[1]: [f"class{i}" for i in range(10)]}, f)


def write_coco(root, split, n_images, captions_per_image=2):
    """A COCO captions tree: <root>/<split>/*.jpg and <root>/annotations/captions_<split>.json."""
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for i in range(n_images):
        name = f"{i:012d}.jpg"
        Image.new("RGB", (80, 60), color=(30 * i, 100, 200)).save(root / split / name)
        images.append({"id": 100 + i, "file_name": name, "height": 60, "width": 80})
        for c in range(captions_per_image):
            annotations.append(
                {
                    "id": 1000 + 10 * i + c,
                    "image_id": 100 + i,
                    "caption": f"picture {i} caption {c}",
                }
            )
    (root / "annotations" / f"captions_{split}.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )


def read_wandb_run(folder: Path) -> dict:
    """What an offline W&B run folder holds, read back from its `run-*.wandb` event log:
    {name, group, job_type, tags, config, history (rows), summary, tables, images}.

    The log is a LevelDB-style record log (a 7-byte ':W&B' header, then 32 KiB blocks of
    records with a 7-byte header: CRC32, length, type full/first/middle/last), each record
    a wandb.proto Record.
    """
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = folder.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B event log"
    block, pos, buf = 32768, 7, b""
    out = {"config": {}, "history": [], "summary": {}, "tags": []}

    def nested(items) -> dict:
        row = {}
        for item in items:
            key = "/".join(item.nested_key) if item.nested_key else item.key
            row[key] = json.loads(item.value_json)
        return row

    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding to the block's end
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):  # first or middle part of a record
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        buf = b""
        kind_name = record.WhichOneof("record_type")
        if kind_name == "run":
            run = record.run
            out.update(name=run.display_name, group=run.run_group, job_type=run.job_type)
            out["tags"] = list(run.tags)
            out["config"].update({u.key: json.loads(u.value_json) for u in run.config.update})
        elif kind_name == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind_name == "history":
            out["history"].append(nested(record.history.item))
        elif kind_name == "summary":
            out["summary"].update(nested(record.summary.update))
    out["tables"] = {
        p.name.rsplit("_", 2)[0]: json.loads(p.read_text())
        for p in folder.glob("files/media/table/*.table.json")
    }
    out["images"] = {p.name.rsplit("_", 2)[0] for p in folder.glob("files/media/images/*.png")}
    return out
