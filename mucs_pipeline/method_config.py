"""Each method's config: `method_settings` (values for keys of every method, each taken where
a method has the key: how one multirun over several methods, or `debug=micro`, sets a
method-specific option), the config of a method other than the selected one (random, an
ensemble's components) and whether its scores are computed in bf16."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from mucs_pipeline import config_dirs
from mucs_pipeline.attribution.base import method_class


def _settings_for(method_cfg: DictConfig, settings) -> dict:
    """The entries of `method_settings` that `method_cfg` has a key for (others ignored)."""
    return {k: v for k, v in (settings or {}).items() if k in method_cfg}


def with_method_settings(method_cfg: DictConfig, settings) -> DictConfig:
    """`method_cfg` with `method_settings` applied to the keys it has."""
    present = _settings_for(method_cfg, settings)
    return OmegaConf.merge(method_cfg, present) if present else method_cfg


def drop_settings_set_on_the_method(cfg: DictConfig, overrides) -> None:
    """Drop the `method_settings` (`model_settings`) entries that the command line also sets
    on the method (model) itself, so that the explicit one wins: `debug=micro
    method.max_steps=50` runs 50 steps, not debug's 3. `overrides` are the command line's
    (Hydra's task overrides)."""
    keys = [o.lstrip("+").split("=", 1)[0] for o in overrides]
    for group in ("method", "model"):
        explicit = {k.split(".")[1] for k in keys if k.startswith(f"{group}.")}
        with open_dict(cfg):
            for key in explicit & set(cfg.get(f"{group}_settings") or {}):
                cfg[f"{group}_settings"].pop(key)


def apply_method_settings(cfg: DictConfig) -> None:
    """Set `cfg.method`'s keys from `method_settings` (a run's first step), in place: the
    selected method stays attached to the run config its interpolations resolve against."""
    for key, value in _settings_for(cfg.method, cfg.get("method_settings")).items():
        cfg.method[key] = value


def apply_model_settings(cfg: DictConfig) -> None:
    """Set `cfg.model`'s keys from `model_settings`, in place, where the network has them."""
    for key, value in _settings_for(cfg.model, cfg.get("model_settings")).items():
        cfg.model[key] = value


def method_cfg(cfg: DictConfig, method: str) -> DictConfig:
    """The config of `method`: the selected one, or the defaults of its file in a method/
    folder of the config path (conf/method/ and any `hydra.searchpath` folder: random, an
    ensemble's components), with `method_settings` and an ensemble's `overrides`."""
    if method == cfg.method.name:
        return cfg.method
    folders = [d / "method" for d in config_dirs(cfg)]
    paths = [p for d in folders if (p := d / f"{method}.yaml").exists()]
    if not paths:
        where = ", ".join(map(str, folders))
        raise ValueError(f"method {method!r}: no config file {method}.yaml in {where}")
    defaults = OmegaConf.load(paths[0])
    overrides = cfg.method.get("overrides") or {}
    defaults = with_method_settings(defaults, cfg.get("method_settings"))
    if method in overrides:
        defaults = OmegaConf.merge(defaults, overrides[method])
    # Resolved against the run config, for interpolations such as ${paths.weights_dir}.
    run = OmegaConf.to_container(cfg, resolve=False)
    run["method"] = OmegaConf.to_container(defaults, resolve=False)
    return OmegaConf.create(OmegaConf.to_container(OmegaConf.create(run).method, resolve=True))


def components(cfg: DictConfig, method: str) -> list[str]:
    """The methods whose scores an ensemble method combines (none for other methods)."""
    mc = method_cfg(cfg, method)
    return method_class(mc).components(mc)


def bf16_scores(cfg: DictConfig, method: str) -> bool:
    """Whether `method`'s scores are computed under trainer.bf16_scoring: it is on and they
    are network losses, the method's own or an ensemble component's."""
    if not cfg.trainer.bf16_scoring:
        return False
    own = method_class(method_cfg(cfg, method)).bf16_scoring
    return own or any(bf16_scores(cfg, c) for c in components(cfg, method))
