"""Check a composed config before any compute.

Types are checked against the shipped config files, which act as the schema of their
group: a key's value must have the type that key has in some option of the group (an
int is accepted for a float; null and interpolations in the files accept anything).
Semantic rules follow: ranges, names, shapes, paths. Every violation is one line
`key=value: expected ...`; `python -m mucs_pipeline` prints them and exits with status 2
before anything is written to the run folder.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mucs_pipeline import conf_dir
from mucs_pipeline.attribution.base import method_class
from mucs_pipeline.augment import OPS
from mucs_pipeline.constants import BASELINE
from mucs_pipeline.data.base import DATASETS
from mucs_pipeline.errors import ConfigError
from mucs_pipeline.evaluation.metrics import METRICS
from mucs_pipeline.evaluation.protocol import top_k
from mucs_pipeline.generation import MAX_SEED
from mucs_pipeline.graph import QUERY_STAGES, STAGES
from mucs_pipeline.lds_units import QUERY_SETS
from mucs_pipeline.method_config import components, method_cfg

GROUPS = ("dataset", "model", "diffusion", "method", "metric", "trainer", "logger", "paths", "lds")


def _type_name(value: Any) -> str | None:
    """The schema type of a value in a shipped file (None: accepts anything)."""
    if value is None or (isinstance(value, str) and "${" in value):
        return None
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(value, t):
            return name
    return "list" if isinstance(value, list) else "dict"


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if key == "defaults":
            continue
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@functools.cache  # the shipped files do not change while a process runs
def schema() -> dict[str, set[str | None]]:
    """key -> the types it has across the shipped files (groups and config.yaml)."""
    types: dict[str, set[str | None]] = {}
    root = conf_dir()
    files = [(root / "config.yaml", "")]
    files += [(f, f"{g}.") for g in GROUPS for f in sorted((root / g).glob("*.yaml"))]
    for path, prefix in files:
        tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        tree.pop("hydra", None)
        for key, value in _leaves(tree, prefix).items():
            types.setdefault(key, set()).add(_type_name(value))
    return types


def _matches(value: Any, allowed: set[str | None]) -> bool:
    if None in allowed or value is None:
        return True
    actual = _type_name(value)
    return actual in allowed or (actual == "int" and "float" in allowed)


def check_types(cfg: dict, problems: list[str]) -> None:
    types = schema()
    for key, value in _leaves(cfg).items():
        allowed = types.get(key)
        if allowed is not None and not _matches(value, allowed):
            expected = " or ".join(sorted(t for t in allowed if t))
            problems.append(f"{key}={value!r}: expected a value of type {expected}")


def _get(cfg: dict, key: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_ranges(cfg: dict, problems: list[str]) -> None:
    """Numeric ranges: (key, test, expectation); absent keys are not checked."""
    positive_int = (lambda v: isinstance(v, int) and v > 0, "an integer > 0")
    rules = [
        # Item seeds are seed x 100,000 + i, and torch seeds a generator with an int64.
        (
            "seed",
            lambda v: isinstance(v, int) and 0 <= v <= MAX_SEED,
            f"an integer in [0, {MAX_SEED}]",
        ),
        (
            "dataset.subset_seed",
            lambda v: isinstance(v, int) and 0 <= v < 2**63,
            "an integer in [0, 2**63)",
        ),
        ("generate.num_items", *positive_int),
        ("query.top_k", *positive_int),
        ("generate.num_controls", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
        ("generate.num_steps", *positive_int),
        ("generate.batch_size", *positive_int),
        ("generate.cfg_weight", lambda v: v >= 0, "a number >= 0"),
        ("pretrain.steps", *positive_int),
        ("pretrain.batch_size", *positive_int),
        ("pretrain.lr", lambda v: v > 0, "a number > 0"),
        ("pretrain.ema_decay", lambda v: 0 <= v < 1, "a number in [0, 1)"),
        ("pretrain.cond_drop", lambda v: 0 <= v < 1, "a number in [0, 1)"),
        ("pretrain.augment.p", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
        ("pretrain.patience", *positive_int),
        ("pretrain.epochs", lambda v: v > 0, "a number of passes > 0"),  # null: pretrain.steps
        ("pretrain.validate_every", *positive_int),
        ("pretrain.checkpoint_every", *positive_int),
        ("retrain.steps", *positive_int),
        ("null_loss.batch_size", *positive_int),
        ("null_loss.num_batches", *positive_int),
        ("evaluate.k_fraction", lambda v: 0 < v < 1, "a fraction in (0, 1)"),
        ("evaluate.alpha", lambda v: 0 < v < 1, "a significance level in (0, 1)"),
        ("model.hidden", *positive_int),
        ("model.depth", *positive_int),
        ("model.heads", *positive_int),
        ("model.patch", *positive_int),
        ("dataset.resolution", *positive_int),
        ("dataset.subset", *positive_int),  # null: the whole dataset
        ("dataset.channels", lambda v: v in (1, 3), "1 (greyscale) or 3 (RGB)"),
        ("trainer.devices", *positive_int),
        ("trainer.threads", *positive_int),  # null: torch's default
        ("lds.num_subsets", lambda v: isinstance(v, int) and v >= 3, "an integer >= 3"),
        ("lds.alpha", lambda v: 0 < v < 1, "a fraction in (0, 1)"),
        ("lds.replicates", *positive_int),
        ("lds.steps", *positive_int),  # null: pretrain.steps x alpha
        ("lds.models_per_pass", *positive_int),
        ("lds.num_heldout", *positive_int),
        ("lds.bank.levels", *positive_int),
        ("lds.bank.noises", *positive_int),
        ("lds.bank.batch_size", *positive_int),
        ("lds.confidence", lambda v: 0 < v < 1, "a confidence level in (0, 1)"),
        ("lds.resamples", *positive_int),
    ]
    try:  # the method's own keys, with the ranges its class declares
        ranges = method_class(cfg.get("method", {})).ranges
    except ValueError:  # a method of no known kind: check_semantics reports it
        ranges = {}
    rules += [(f"method.{key}", test, expected) for key, (test, expected) in ranges.items()]
    for key, test, expected in rules:
        value = _get(cfg, key)
        if not _number(value):
            continue  # absent, or a wrong type that check_types reports
        if not math.isfinite(value):
            problems.append(f"{key}={value!r}: expected a finite number, {expected}")
        elif not test(value):
            problems.append(f"{key}={value!r}: expected {expected}")
    for key in ("model.conv_channels", "model.conv_strides"):
        values = _get(cfg, key)
        if isinstance(values, list) and not all(isinstance(v, int) and v > 0 for v in values):
            problems.append(f"{key}={values}: expected a list of integers > 0")


def check_semantics(cfg: dict, problems: list[str]) -> None:
    stages = cfg.get("stages", [])
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        what = f"unknown {unknown}" if unknown else "nothing to run"
        problems.append(f"stages={stages}: {what}, expected some of {STAGES}")
    elif cfg.get("query") is not None:
        if not set(QUERY_STAGES) & set(stages):
            problems.append(
                f"stages={stages}: a query run (+query=folder) runs some of "
                f"{list(QUERY_STAGES)}, and no other stage"
            )
    method = cfg.get("method", {})
    try:
        method_class(method)
    except ValueError as err:
        problems.append(str(err))
    if method.get("name") == BASELINE:
        problems.append(
            f"method.name={BASELINE!r}: random removal is the null every method is compared "
            "against, not a method to evaluate; choose another, e.g. method=mucs"
        )
    dataset = cfg.get("dataset", {})
    if dataset.get("name") not in DATASETS:
        problems.append(f"dataset.name={dataset.get('name')!r}: expected one of {tuple(DATASETS)}")
    model, res = cfg.get("model", {}), dataset.get("resolution")
    if all(_number(v) and v > 0 for v in (model.get("hidden"), model.get("heads"))):
        if model["hidden"] % model["heads"]:
            heads, hidden = model["heads"], model["hidden"]
            problems.append(f"model.heads={heads}: expected a divisor of model.hidden={hidden}")
    strides, patch = model.get("conv_strides") or [], model.get("patch")
    channels = model.get("conv_channels") or []
    if len(strides) != len(channels):
        problems.append(
            f"model.conv_strides={strides}: expected one stride per entry of "
            f"model.conv_channels={channels}"
        )
    if isinstance(res, int) and isinstance(patch, int) and patch > 0:
        scale = math.prod(s for s in strides if isinstance(s, int)) or 1
        if res % scale or (res // scale) % patch:
            problems.append(
                f"dataset.resolution={res}: expected a multiple of prod(model.conv_strides)="
                f"{scale} x model.patch={patch}"
            )
    conditional = dataset.get(
        "conditional", dataset.get("name") in ("digits", "artbench10", "coco")
    )
    weight = _get(cfg, "generate.cfg_weight")
    generates = cfg.get("query") is None  # a query run generates nothing
    if generates and not conditional and _number(weight) and weight != 1.0:
        problems.append(
            f"generate.cfg_weight={weight}: classifier-free guidance needs a conditional "
            "dataset (this one is unconditional); expected 1.0"
        )
    if _get(cfg, "pretrain.patience") is not None and dataset.get("name") in ("digits", "folder"):
        if dataset.get("subset") is None:  # no test split: the held-out items are a subset's rest
            problems.append(
                "pretrain.patience: early stopping needs held-out items, and dataset "
                f"{dataset.get('name')!r} has no test split; set dataset.subset to keep some out"
            )
    ops = _get(cfg, "pretrain.augment.ops") or []
    if any(op not in OPS for op in ops):
        problems.append(f"pretrain.augment.ops={ops}: expected some of {list(OPS)}")
    metrics = _get(cfg, "metric.names") or []
    if not metrics:
        problems.append(f"metric.names={metrics}: expected some of {sorted(METRICS)}")
    for name in metrics:
        if name not in METRICS:
            problems.append(
                f"metric.names={metrics}: unknown {name!r}, expected some of {sorted(METRICS)}"
            )
    check_lds(cfg, problems)
    accelerator = _get(cfg, "trainer.accelerator")
    if accelerator not in ("cpu", "gpu"):
        problems.append(f"trainer.accelerator={accelerator!r}: expected cpu or gpu")
    elif accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            problems.append("trainer.accelerator='gpu': no CUDA device is visible; use trainer=cpu")


def check_lds(cfg: dict, problems: list[str]) -> None:
    """lds=on: its names (check_training_set: its subsets keep some items in, some out)."""
    lds = cfg.get("lds")
    if lds is None:
        return
    if cfg.get("query") is not None:
        problems.append("lds=on: LDS measures a run's generated or held-out items, not a "
                        "query run's images (+query=folder); run it without +query")  # fmt: skip
    if lds.get("queries") not in QUERY_SETS:
        problems.append(f"lds.queries={lds.get('queries')!r}: expected one of {list(QUERY_SETS)}")
    if lds.get("split") not in ("eval", "tune"):
        problems.append(f"lds.split={lds.get('split')!r}: expected eval or tune")
    if _get(cfg, "pretrain.patience") is not None:
        problems.append("lds=on: the subset models train a fixed number of steps "
                        "(lds.steps); expected pretrain.patience=null")  # fmt: skip
    tc = cfg.get("trainer", {})
    if (tc.get("devices") or 1) > 1 or (tc.get("num_nodes") or 1) > 1:
        problems.append("lds=on: its subset models train in one process; expected "
                        "trainer.devices=1 (one GPU: trainer=gpu)")  # fmt: skip
    dataset = cfg.get("dataset", {})
    held_out = dataset.get("name") not in ("digits", "folder") or dataset.get("subset")
    if lds.get("queries") in ("heldout", "both") and not held_out:
        problems.append(f"lds.queries={lds['queries']}: dataset {dataset.get('name')!r} has "
                        "no test split; set dataset.subset to keep some images out")  # fmt: skip


def check_paths(cfg: dict, problems: list[str]) -> None:
    """The runs folder, and the data and weight files that the configured stages will read."""
    if not str(_get(cfg, "paths.runs_dir", "")).strip():
        problems.append("paths.runs_dir='': expected the folder that holds the run folders")
    dataset = cfg.get("dataset", {})
    root = dataset.get("root")
    if root is None and dataset.get("name") == "folder":
        problems.append(
            "dataset.root=None: expected the folder of images to train on "
            "(dataset=folder dataset.root=/path/to/images)"
        )
    elif root is not None and Path(root).is_file():
        problems.append(f"dataset.root={root!r}: a file, expected a folder")
    elif root is not None and not dataset.get("download", False) and not Path(root).exists():
        problems.append(
            f"dataset.root={root!r}: no such folder (see README, 'The paper's experiments', "
            "for what to download and where)"
        )
    init = _get(cfg, "pretrain.init_from")
    if init is not None and not Path(str(init)).expanduser().exists():
        problems.append(
            f"pretrain.init_from={init!r}: no such file or folder; expected a trained network "
            "(this project's ema.pt, a Lightning .ckpt, a .safetensors file or a diffusers "
            "UNet2DModel / DDPMPipeline folder)"
        )
    metric = cfg.get("metric", {})
    names = metric.get("names") or []
    if not metric.get("skip_unavailable", False):
        for name, key in (("sscd", "sscd_weights"), ("dino", "dino_weights")):
            path = metric.get(key)
            if name in names and isinstance(path, str) and not Path(path).exists():
                problems.append(f"metric.{key}={path!r}: no such file (needed by metric {name})")


def check_method_files(cfg: DictConfig, problems: list[str]) -> None:
    """The weight files that the method, and an ensemble's components, read."""
    try:
        for name in [cfg.method.name, *components(cfg, cfg.method.name)]:
            method = method_cfg(cfg, name)
            key_of = "method" if name == cfg.method.name else f"method.overrides.{name}"
            for key, what in method_class(method).weight_files(method).items():
                path = method.get(key)
                if isinstance(path, str) and not Path(path).exists():
                    problems.append(f"{key_of}.{key}={path!r}: no such file ({what})")
    except ValueError as err:  # a component without a config file, or of no known kind
        problems.append(str(err))


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every violation of `cfg` (a composed run config)."""
    run = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # Hydra's own node aside
    try:
        tree = OmegaConf.to_container(run, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError([f"{err.full_key}: {err.msg}"]) from None
    problems: list[str] = []
    check_types(tree, problems)
    check_ranges(tree, problems)
    if not problems:  # the semantic rules assume well-typed values
        check_semantics(tree, problems)
        check_paths(tree, problems)
    if not problems:  # the methods' own files, for a method that exists
        check_method_files(cfg, problems)
    if problems:
        raise ConfigError(problems)


def check_training_set(cfg: DictConfig, num_train: int) -> None:
    """The leave-k-out removal must leave training items: k x m <= |Z| (before retraining);
    LDS's subsets must keep some items in and some out."""
    if cfg.get("lds") is not None and not 0 < round(cfg.lds.alpha * num_train) < num_train:
        raise ConfigError(
            [
                f"lds.alpha={cfg.lds.alpha}: a subset keeps {round(cfg.lds.alpha * num_train)} "
                f"of the {num_train} training items; expected some in and some out"
            ]
        )
    k, m = top_k(num_train, cfg.evaluate.k_fraction), cfg.generate.num_items
    if k * m > num_train:
        raise ConfigError(
            [
                f"evaluate.k_fraction={cfg.evaluate.k_fraction}: k x m = {k} x {m} exceeds the "
                f"{num_train} training items; expected k x generate.num_items <= |Z|"
            ]
        )
