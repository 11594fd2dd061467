"""Networks (DiT) and diffusion variants (EDM)."""

from mucs_pipeline.models.dit import DiT, build_model
from mucs_pipeline.models.edm import EDM, build_diffusion

__all__ = ["DiT", "EDM", "build_diffusion", "build_model"]
