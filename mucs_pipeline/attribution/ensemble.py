"""Rank-based TDA ensemble (paper App. A.4), built from the other methods' score artifacts."""

from __future__ import annotations

import torch
from scipy.stats import rankdata

from mucs_pipeline.attribution.base import Context, Method


class Ensemble(Method):
    """score = 1 / sum_k w_k rank_k, ranks descending (1 = most influential), ties averaged."""

    name = "ensemble"

    @classmethod
    def components(cls, cfg):
        """Those with a non-zero weight."""
        return [name for name, w in cfg.weights.items() if w]

    def __init__(self, cfg, ctx: Context):
        super().__init__(cfg, ctx)
        missing = [c for c in self.components(cfg) if c not in (ctx.components or {})]
        if missing:
            raise ValueError(f"ensemble {cfg.name!r}: no scores for {missing}")
        if not self.components(cfg):
            raise ValueError(f"ensemble {cfg.name!r}: every weight in method.weights is 0")

    def score(self, index, x_hat, c_hat):
        total = torch.zeros(len(self.ctx.data), dtype=torch.float64)
        for name in self.components(self.cfg):
            scores = self.ctx.components[name][index].double().numpy()
            total += float(self.cfg.weights[name]) * torch.from_numpy(rankdata(-scores))
        return (1.0 / total).float(), {}
