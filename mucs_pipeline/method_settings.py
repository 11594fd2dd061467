"""`method_settings`: values for keys of every method, each taken where a method has the key
(how one multirun over several methods, or `debug=micro`, sets a method-specific option)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict


def _settings_for(method_cfg: DictConfig, settings) -> dict:
    """The entries of `method_settings` that `method_cfg` has a key for (others ignored)."""
    return {k: v for k, v in (settings or {}).items() if k in method_cfg}


def with_method_settings(method_cfg: DictConfig, settings) -> DictConfig:
    """`method_cfg` with `method_settings` applied to the keys it has."""
    present = _settings_for(method_cfg, settings)
    return OmegaConf.merge(method_cfg, present) if present else method_cfg


def drop_settings_set_on_the_method(cfg: DictConfig, overrides) -> None:
    """Drop the `method_settings` entries that the command line also sets on the method
    itself, so that the explicit one wins: `debug=micro method.max_steps=50` runs 50 steps,
    not debug's 3. `overrides` are the command line's (Hydra's task overrides)."""
    keys = [o.lstrip("+").split("=", 1)[0] for o in overrides]
    explicit = {k.split(".")[1] for k in keys if k.startswith("method.")}
    with open_dict(cfg):
        for key in explicit & set(cfg.get("method_settings") or {}):
            cfg.method_settings.pop(key)


def apply_method_settings(cfg: DictConfig) -> None:
    """Set `cfg.method`'s keys from `method_settings` (a run's first step), in place: the
    selected method stays attached to the run config its interpolations resolve against."""
    for key, value in _settings_for(cfg.method, cfg.get("method_settings")).items():
        cfg.method[key] = value
