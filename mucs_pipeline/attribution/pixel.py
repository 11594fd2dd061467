"""Pixel-space cosine similarity: the offline analogue of the CLIP/DINO baselines."""

from __future__ import annotations

import torch.nn.functional as F

from mucs_pipeline.attribution.base import Method


class Pixel(Method):
    name = "pixel"

    def score(self, index, x_hat, c_hat):
        train = self.ctx.data.x.flatten(1)  # (|Z|, C*H*W)
        return F.cosine_similarity(train, x_hat.reshape(1, -1), dim=1), {}
