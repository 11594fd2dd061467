"""What `lds=on` asks for, read from the config: the subset models and how they are grouped
into units, their steps and random streams, and the query sets (conf/lds/on.yaml)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

QUERY_SETS = {"generated": ["generated"], "heldout": ["heldout"], "both": ["generated", "heldout"]}


def enabled(cfg: DictConfig) -> bool:
    return cfg.get("lds") is not None


def query_sets(cfg: DictConfig) -> list[str]:
    """The query sets LDS is measured on: the generated items, held-out images, or both."""
    return QUERY_SETS[cfg.lds.queries] if enabled(cfg) else []


def models(cfg: DictConfig) -> list[tuple[int, int]]:
    """(subset, replicate) of every subset model, subset-major."""
    return [(s, r) for s in range(cfg.lds.num_subsets) for r in range(cfg.lds.replicates)]


def units(cfg: DictConfig) -> list[str]:
    """The lds_train units: `lds.models_per_pass` models each, named by their range (the
    same units, with the same keys, for any S that includes their models)."""
    k, count = cfg.lds.models_per_pass, len(models(cfg))
    return [f"models{a:04d}-{min(a + k, count) - 1:04d}" for a in range(0, count, k)]


def unit_models(cfg: DictConfig, unit: str) -> list[tuple[int, int]]:
    """The (subset, replicate) pairs a unit of `units` trains."""
    first, last = (int(x) for x in unit.removeprefix("models").split("-"))
    return models(cfg)[first : last + 1]


def steps(cfg: DictConfig) -> int:
    """Updates per subset model: `lds.steps`, else pretraining's steps scaled by alpha, so
    that a subset model makes as many passes over its items as F1 did (as D-TRAK and the
    K-FAC influence code train their subset models)."""
    if cfg.lds.steps is not None:
        return cfg.lds.steps
    return max(1, round(cfg.lds.alpha * cfg.pretrain.steps))


def stream(cfg: DictConfig, subset: int, replicate: int):
    """The random stream (init, batches, draws) of a subset model: what `seed` is to
    `training.train`. Common random numbers: pretraining's own (F1's init and draws) for
    every subset, another seed's for each further replicate; otherwise a stream of its own
    per model."""
    if cfg.lds.common_random_numbers:
        return cfg.seed if replicate == 0 else ("lds-replicate", cfg.seed, replicate)
    return ("lds-model", cfg.seed, cfg.lds.split, subset, replicate)


def recipe(cfg: DictConfig) -> dict:
    """What of the pretraining recipe a subset model follows, as lds_train's key hashes
    it: the recipe minus what only F1's training uses (its steps, which `steps` replaces;
    checkpoint and validation intervals; early stopping, which lds=on refuses; a given F1)."""
    recipe = OmegaConf.to_container(cfg.pretrain, resolve=True)
    for key in ("steps", "epochs", "checkpoint_every", "validate_every", "patience", "init_from"):
        recipe.pop(key, None)
    return recipe
