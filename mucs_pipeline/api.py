"""Attribute your own images from Python (a notebook), on the command line's code path:

    from mucs_pipeline.api import load

    run = load("pretrain.init_from=runs/digits/seed0/pretrain/<key>/ema.pt")  # CLI overrides
    rows = run.attribute(["queries/3/a.png"], method="mucs", top_k=5)
    pandas.DataFrame(rows)  # query, rank, train_index, train_item, train_condition, score

Each call runs what `python -m mucs_pipeline +query=folder ...` runs with the same
overrides (and reuses the same finished units), and writes the same CSV and figures.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import conf_dir
from mucs_pipeline.config import prepare
from mucs_pipeline.data.base import DatasetError
from mucs_pipeline.query.inputs import load_queries, make_queries, query_files
from mucs_pipeline.query.run import attribute_queries
from mucs_pipeline.stages import common


def compose(overrides: list[str]) -> DictConfig:
    """The run config the command line prepares from `overrides` (query mode on)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not any(o.lstrip("+").startswith("query=") for o in overrides):
        overrides = ["+query=folder", *overrides]
    GlobalHydra.instance().clear()  # a notebook may have composed before
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    return prepare(cfg, overrides)


class Run:
    """A trained model (pretrained by the pipeline, or `pretrain.init_from`) and its
    training set, ready to attribute images with any method."""

    def __init__(self, *overrides: str):
        self.overrides = list(overrides)
        self.cfg = compose(self.overrides)
        if self.cfg.trainer.threads:
            torch.set_num_threads(self.cfg.trainer.threads)
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        self.data = common.dataset(self.cfg)
        self.folder: Path | None = None  # where the last call wrote its CSV and figures

    def attribute(
        self,
        images,
        method: str | None = None,
        top_k: int | None = None,
        labels: list | None = None,
        captions: list[str] | None = None,
    ) -> list[dict]:
        """The `top_k` most influential training items of each image, as the rows of
        attributions.csv. `images`: image files, a folder of them, or an (N, C, H, W)
        tensor in [-1, 1] at the training resolution; `labels`: their classes (names or
        ids; default: a folder's class subfolders, or each file's folder name) on
        class-conditional data; `captions`: on COCO. `method` and `top_k` default to the
        run's (`method=...`, `query.top_k=...` given to `load`, else the config's).
        """
        given = {"method": method, "query.top_k": top_k}
        cfg = compose([*self.overrides, *[f"{k}={v}" for k, v in given.items() if v is not None]])
        if isinstance(images, torch.Tensor):
            if images.dim() != 4 or images.shape[1:] != self.data.x.shape[1:]:
                raise DatasetError(
                    f"images of shape {tuple(images.shape)}: expected (N, "
                    f"{', '.join(map(str, self.data.x.shape[1:]))}) in [-1, 1], or image files"
                )
            names = [f"image {i}" for i in range(len(images))]
            queries = make_queries(
                cfg, self.data, names, images.float(), labels=labels, captions=captions
            )
        else:
            paths = [Path(images)] if isinstance(images, (str, Path)) else [Path(p) for p in images]
            if len(paths) == 1 and paths[0].is_dir():
                root, files = query_files(OmegaConf.create({"root": str(paths[0])}))
            else:
                files = [p.expanduser().resolve() for p in paths]
                root = Path(os.path.commonpath([p.parent for p in files]))
                if labels is None and self.data.cond is not None and captions is None:
                    labels = [p.parent.name for p in files]  # each file's folder: its class
            queries = load_queries(cfg, root, files, self.data, labels=labels, captions=captions)
        self.folder, rows = attribute_queries(cfg, self.data, queries)
        return rows


def load(*overrides: str) -> Run:
    """A run from command-line overrides, e.g. load("dataset=digits", "pretrain.init_from=...")."""
    return Run(*overrides)
