"""The interface every attribution method implements."""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.data import ImageData
from mucs_pipeline.models import Diffusion


@dataclass
class Context:
    """What a method may use: the training set, F1, the diffusion variant, L_null."""

    cfg: DictConfig  # the whole run config (pretraining recipe, seed)
    data: ImageData
    diffusion: Diffusion
    net: torch.nn.Module  # F1: the EMA weights of the pretrained model
    loss_null: float
    device: torch.device
    cache_dir: Path  # per-run cache for quantities shared by all generated items
    components: dict[str, torch.Tensor] | None = None  # ensembles: other methods' (m, |Z|) scores

    def cached(self, name: str, compute: Callable[[], Any], mmap: bool = False) -> Any:
        """`compute()` once per run: read from `cache_dir/name` when an intact file is
        there, else computed and written atomically. `mmap`: see `artifacts.load`."""
        return io.cached(self.cache_dir / name, compute, mmap, self.cfg.get("strict", False))


class Method:
    """score(item) -> (scores over the training set, higher = more influential; info).

    Everything the rest of the pipeline knows about a method is asked of its class: what
    `plan=true` counts, the files it needs, the methods it combines, what it records
    beside its scores and the figures the attribute stage and the report draw of them.
    """

    name: str = ""
    # The proposed method: the reference row (R) of the ensemble and ablation tables.
    reference: bool = False
    # Its scores are network losses that trainer.bf16_scoring computes under autocast (it
    # then enters the method's keys; other methods' scores, and keys, do not change).
    bf16_scoring: bool = False
    # {key of the method config: (test, what is expected)}: the ranges config validation
    # checks of the method's numeric keys (an absent key is not checked).
    ranges: dict[str, tuple[Callable[[Any], bool], str]] = {}
    # Keys of the method config that tell a sweep's runs apart: W&B shows them in each
    # run's name and tags (`mucs-lam0.1`).
    sweep_keys: tuple[str, ...] = ()

    def __init__(self, cfg: DictConfig, ctx: Context):
        self.cfg, self.ctx = cfg, ctx
        self.items_per_pass = 1  # generated items that score_many handles together

    def prepare(self, images: torch.Tensor, cond: torch.Tensor | None) -> None:
        """Work shared by all generated items (m, C, H, W), done once before scoring them."""

    def score(
        self, index: int, x_hat: torch.Tensor, c_hat: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def score_many(
        self, indices: list[int], images: list[torch.Tensor], conds: list[torch.Tensor | None]
    ) -> list[tuple[torch.Tensor, dict]]:
        """Several generated items; methods that batch them (MUCS) override this."""
        return [self.score(i, x, c) for i, x, c in zip(indices, images, conds, strict=True)]

    def record(self, infos: list[dict]) -> dict:
        """Entries of scores.pt beside scores and times, from every item's file (its
        scores, seconds and the `info` its method returned)."""
        return {}

    @classmethod
    def cost(cls, cfg: DictConfig, n: int, m: int) -> tuple[int, int, int]:
        """(forwards, optimizer steps, the forwards that also run a backward pass) of
        attributing m generated items over n training items, for `plan=true`: upper bounds
        where a stop rule may end early, the diffusion network only (an encoder forward
        counts one)."""
        return 0, 0, 0

    @classmethod
    def score_batch(cls, cfg: DictConfig) -> int | None:
        """The network forwards per batch its scoring runs (`method.score_batch`, where the
        method has it): the batch `plan=true` times a forward at; None: no such batch."""
        return cfg.get("score_batch")

    @classmethod
    def components(cls, cfg: DictConfig) -> list[str]:
        """The methods whose scores this one combines (an ensemble's); they are attributed first."""
        return []

    @classmethod
    def weight_files(cls, cfg: DictConfig) -> dict[str, str]:
        """{key of the method config: what the file holds}: pretrained weights the method
        reads, checked before a run."""
        return {}

    @classmethod
    def summary(cls, cfg: DictConfig, scores: dict) -> dict:
        """The attribute unit's numbers beside its times (manifest metrics, W&B summary),
        from its scores.pt; a method warns here about its items once."""
        return {}

    @classmethod
    def figures(cls, cfg: DictConfig, scores: dict, folder: Path, prefix: str = "") -> list[Path]:
        """Figures of a scores.pt beside the top-k grid, in `folder` with their names after
        `prefix` (the attribute unit's; the report's, fig_<label>_); returns their paths."""
        return []

    @classmethod
    def items_at_cap(cls, scores: dict) -> int | None:
        """How many items of a scores.pt stopped at the method's step cap instead of its
        stop rule (a diagnostic of the setup); None for a method without one."""
        return None

    @classmethod
    def log_wandb(cls, run, scores: dict) -> dict[str, list]:
        """Log curves of a scores.pt to the attribute unit's W&B `run`; returns per-item
        columns for its items table."""
        return {}


POSITIVE_INT = (lambda v: isinstance(v, int) and v > 0, "an integer > 0")  # for `ranges`


def select_parameters(net: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Names of the parameters matched by the glob patterns (C4: the MLP weights)."""
    names = [n for n, _ in net.named_parameters() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not names:
        raise ValueError(f"method.params={list(patterns)} matches no parameter of the network")
    return names


def item_losses(
    net: torch.nn.Module,
    diffusion: Diffusion,
    x_hat: torch.Tensor,
    c_hat: torch.Tensor | None,
    draws: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """The generated item's losses at `draws` (sigma, n) pairs of the training
    distributions: (draws,), the L(z_hat, sigma, n, F) of Eq. 2's L_GA."""
    sigma = diffusion.training_sigma(draws, generator)
    noise = torch.randn((draws, *x_hat.shape), generator=generator)
    return diffusion.loss(
        net,
        x_hat.expand(draws, *x_hat.shape).to(device),
        None if c_hat is None else c_hat.expand(draws, -1).to(device),
        sigma.to(device),
        noise.to(device),
    )


# method kind -> (module of mucs_pipeline.attribution, class), imported on use; in the row
# order of the paper's tables, which the report follows
METHODS = {
    "random": ("random", "Random"),
    "condition": ("similarity", "Condition"),
    "pixel": ("similarity", "Pixel"),
    "clip": ("similarity", "CLIP"),
    "dino": ("similarity", "DINO"),
    "dtrak": ("dtrak", "DTRAK"),
    "das": ("dtrak", "DAS"),
    "forward_inf": ("ascent", "ForwardINF"),
    "abu": ("ascent", "AbU"),
    "mucs": ("mucs", "MUCS"),
    "ensemble": ("ensemble", "Ensemble"),
}


def method_kind(cfg: Mapping) -> str:
    """What a method config selects: its `kind` where several configs share a class (the
    ensembles, a method outside this package), else its name."""
    return cfg.get("kind", cfg.get("name"))


def method_class(cfg: Mapping) -> type[Method]:
    """The class of a method config: a registered kind, or the import path of a Method
    subclass (`kind: package.module.Class`), so that a method can live outside this package."""
    kind = method_kind(cfg)
    if kind in METHODS:
        module, name = METHODS[kind]
        return getattr(importlib.import_module(f"mucs_pipeline.attribution.{module}"), name)
    expected = f"expected one of {', '.join(METHODS)}, or method.kind=package.module.Class"
    if not isinstance(kind, str) or "." not in kind:
        raise ValueError(f"method.name={kind!r}: {expected}")
    module, _, name = kind.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"method.kind={kind!r}: cannot import it ({err}); {expected}") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(f"method.kind={kind!r}: not a subclass of {__name__}.Method")
    return cls


def build_method(cfg: DictConfig, ctx: Context) -> Method:
    """The method of a method config."""
    return method_class(cfg)(cfg, ctx)
