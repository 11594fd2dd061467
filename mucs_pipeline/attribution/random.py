"""Random attribution: the null model every method is compared against."""

from __future__ import annotations

import torch

from mucs_pipeline import rng
from mucs_pipeline.attribution.base import Method


class Random(Method):
    name = "random"

    def score(self, index, x_hat, c_hat):
        gen = rng.generator("random-attribution", self.ctx.cfg.seed, index)
        return torch.rand(len(self.ctx.data), generator=gen), {}
