"""One prepared config: what every entry point (the command line, the Python API, query
mode, plan=true, multirun and SLURM jobs) runs, prepared once by `prepare` and read-only
from then on, so that what is printed, hashed and run is the same config.

Preparing applies `method_settings` (a key set on the method itself wins), resolves
`generate.captions` (COCO prompt mode), validates, checks the query images of a query
run, reads the training set (an unreadable image stops the run here), turns
`pretrain.epochs` into steps and checks a given F1 (`pretrain.init_from`) against the
configured network (a diffusers folder sets the network to its UNet and is checked
against the dataset and the diffusion config). `print_config=true` prints the
result and runs nothing.
"""

from __future__ import annotations

import copy
import math

from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import artifacts as io
from mucs_pipeline.data import training_set
from mucs_pipeline.keys import init_from
from mucs_pipeline.method_config import (
    apply_method_settings,
    apply_model_settings,
    drop_settings_set_on_the_method,
)
from mucs_pipeline.prompts import apply_prompts
from mucs_pipeline.query.inputs import captions_for, query_files
from mucs_pipeline.validate import check_training_set, validate

_PREPARED: dict[str, DictConfig] = {}  # a process prepares one config once (see prepare)


def resolve_epochs(cfg: DictConfig, num_items: int) -> None:
    """`pretrain.epochs` (passes over the training set) as `pretrain.steps`: ceil(epochs x
    items / batch_size), so that folders of any size are fitted alike; retraining follows
    through `retrain.steps: ${pretrain.steps}`. Nothing changes when epochs is null."""
    epochs = cfg.pretrain.get("epochs")
    if epochs is not None:
        cfg.pretrain.steps = math.ceil(epochs * num_items / cfg.pretrain.batch_size)


def prepare(cfg: DictConfig, overrides=()) -> DictConfig:
    """The run config of composed `cfg` (unchanged), read-only; ConfigError (or
    DatasetError, CheckpointMismatchError) names what is wrong before any compute.

    `overrides` are the command line's (Hydra's task overrides), so that a key set on the
    method itself wins over `method_settings`. A config with a `hydra` node (Hydra's
    callbacks see one) is validated with it, for the config folders it adds; the result
    has none. Preparing the same config twice in a process returns the first result.
    """
    if OmegaConf.is_readonly(cfg):
        return cfg  # prepared already
    run_keys = [k for k in cfg if k != "hydra"]
    memo = io.config_hash(OmegaConf.to_container(OmegaConf.masked_copy(cfg, run_keys)),
                          list(overrides))  # fmt: skip
    if memo not in _PREPARED:
        full = copy.deepcopy(cfg)
        drop_settings_set_on_the_method(full, overrides)
        apply_method_settings(full)  # each method takes the keys it has
        apply_model_settings(full)  # and the network
        apply_prompts(full)  # generate.captions: the attributed items' captions
        validate(full)
        if full.get("query") is not None and full.query.get("root") is not None:
            # The command line's query images: an empty folder or a missing caption is
            # reported before the training set is read (COCO decodes thousands of images).
            root, files = query_files(full.query)
            if full.dataset.name == "coco":
                captions_for(full.query, root, files)
        data = training_set(full.dataset)
        resolve_epochs(full, len(data))
        if init_from(full) is not None:
            from mucs_pipeline.weights import load_init  # imports Lightning: only when used

            if init_from(full).is_dir():  # a diffusers folder: its UNet is the network
                from mucs_pipeline import diffusers_folder

                diffusers_folder.prepare(full, data.x.shape[-1], data.x.shape[1], data.cond_dim)

            load_init(full, data)  # a network of another architecture stops the run here
        if "retrain" in full.stages and full.get("query") is None:
            check_training_set(full, len(data))
        prepared = OmegaConf.masked_copy(full, run_keys)
        OmegaConf.set_struct(prepared, True)  # as Hydra composed it: an unknown key is an error
        OmegaConf.set_readonly(prepared, True)
        _PREPARED[memo] = prepared
    return _PREPARED[memo]


def derived(cfg: DictConfig, changes: dict) -> DictConfig:
    """A read-only copy of prepared `cfg` with `changes` merged in (query mode's item
    counts): the prepared config itself never changes."""
    out = OmegaConf.merge(cfg, changes)
    OmegaConf.set_readonly(out, True)
    return out
