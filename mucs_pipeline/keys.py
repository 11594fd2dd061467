"""What the keys hash of the config: the pretraining and generation recipes, and the keys
that group runs into one comparison (one paper table) and one experiment (its seeds)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import artifacts as io
from mucs_pipeline.method_config import bf16_scores


def init_from(cfg: DictConfig) -> Path | None:
    """The file `pretrain.init_from` names, or None when F1 is pretrained here."""
    path = cfg.pretrain.get("init_from")
    return None if path is None else Path(path).expanduser()


def fingerprint(cfg: DictConfig) -> str | None:
    """The content hash of `pretrain.init_from` (what the keys of every unit built on it
    hash, so that another file at the same path is never mistaken for it): a file's, or a
    diffusers folder's UNet config, weights and scheduler config."""
    path = init_from(cfg)
    if path is None:
        return None
    if path.is_dir():
        from mucs_pipeline import diffusers_folder

        return io.config_hash([io.file_sha256(f) for f in diffusers_folder.files(path)])
    return io.file_sha256(path)


def pretrain_recipe(cfg: DictConfig) -> dict:
    """`cfg.pretrain` as the keys hash it: `init_from` by its file's content, absent when
    unset (so the keys of runs before the option existed stay the same), and never
    `epochs`, which has set `steps` by then (config.prepare): the keys hash what is
    trained, so 640 passes over 600 items share the units of 3,000 steps."""
    recipe = OmegaConf.to_container(cfg.pretrain, resolve=True)
    recipe.pop("epochs", None)
    if recipe.pop("init_from", None) is not None:
        recipe["init_from"] = fingerprint(cfg)
    return recipe


def generate_recipe(cfg: DictConfig) -> dict:
    """`cfg.generate` as the keys hash it: `captions` absent when unset (so the keys of
    runs before the option existed stay the same)."""
    recipe = OmegaConf.to_container(cfg.generate, resolve=True)
    if recipe.get("captions", 0) is None:
        del recipe["captions"]
    return recipe


def comparison_key(cfg: DictConfig) -> str:
    """What makes runs of different methods comparable side by side (one paper table):
    the config minus the method and the seed."""
    c = cfg
    return io.config_hash(
        c.name, c.dataset, c.model, c.diffusion, pretrain_recipe(c), generate_recipe(c),
        c.null_loss, c.retrain, c.evaluate, c.metric,
    )  # fmt: skip


def experiment_key(cfg: DictConfig) -> str:
    """What makes runs of different seeds poolable: the config minus the seed, and the
    scoring precision where it changes the method's scores (float32 keys as before)."""
    bf16 = [True] if bf16_scores(cfg, cfg.method.name) else []
    return io.config_hash(comparison_key(cfg), cfg.method, *bf16)
