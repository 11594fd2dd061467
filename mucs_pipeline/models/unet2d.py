"""diffusers' UNet2DModel as the network F (`model=unet2d`): the model D-TRAK, DAS, K-FAC
influence and journey-TRAK train on CIFAR, and the format of the ecosystem's checkpoints.

The UNet is held as `unet`, so a diffusers state dict loads under the prefix "unet.". Our
conditions are vectors (one-hot classes, the null condition zero); a class-conditional
UNet (`num_class_embeds`) reads them through its embedding table as a matrix product,
which for a one-hot vector is the table's row, as diffusers' lookup, and for the null
condition the zero vector (classifier-free guidance's unconditional branch).
"""

from __future__ import annotations

import torch
from torch import nn

from mucs_pipeline.models.diffusion import condition_or_null
from mucs_pipeline.models.unet import NoiseInput


class OneHotEmbedding(nn.Module):
    """cond @ weight: diffusers' class-embedding table (`weight`, (K, D)) read by vectors."""

    def __init__(self, table: nn.Embedding):
        super().__init__()
        self.weight = table.weight

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.to(self.weight.dtype) @ self.weight


class UNet2D(nn.Module):
    """F(x, c_noise, cond) through a diffusers UNet2DModel built from its config dict."""

    def __init__(self, config: dict, cond_dim: int, noise_input: NoiseInput):
        super().__init__()
        from diffusers import UNet2DModel  # imported on use: diffusers loads slowly

        num_classes = config.get("num_class_embeds")
        if config.get("class_embed_type") is not None:
            raise ValueError(
                f"model.class_embed_type={config['class_embed_type']!r}: only a class table "
                "(num_class_embeds, class_embed_type null) maps to this project's conditions"
            )
        if (num_classes or 0) != cond_dim:
            raise ValueError(
                f"model.num_class_embeds={num_classes} but the dataset's conditions have "
                f"{cond_dim} entries: set model.num_class_embeds={cond_dim or None}"
            )
        self.unet = UNet2DModel(**config)
        if num_classes:
            self.unet.class_embedding = OneHotEmbedding(self.unet.class_embedding)
        self.noise_input, self.cond_dim = noise_input, cond_dim

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        labels = condition_or_null(cond, x, self.cond_dim) if self.cond_dim else None
        return self.unet(x, self.noise_input(c_noise.reshape(-1)), class_labels=labels).sample
