"""Networks (DiT) and diffusion variants (EDM, DDPM, flow matching)."""

from omegaconf import DictConfig, OmegaConf

from mucs_pipeline.models.ddpm import DDPM
from mucs_pipeline.models.diffusion import Diffusion
from mucs_pipeline.models.dit import DiT, build_model
from mucs_pipeline.models.edm import EDM
from mucs_pipeline.models.flow import Flow

VARIANTS = {v.name: v for v in (EDM, DDPM, Flow)}


def build_diffusion(cfg: DictConfig) -> Diffusion:
    """The diffusion variant named by the diffusion group."""
    if cfg.name not in VARIANTS:
        raise ValueError(f"diffusion.name={cfg.name!r}: expected one of {sorted(VARIANTS)}")
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    kwargs.pop("name")
    return VARIANTS[cfg.name](**kwargs)


__all__ = ["DDPM", "EDM", "DiT", "Diffusion", "Flow", "build_diffusion", "build_model"]
