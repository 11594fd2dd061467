"""MUCS: mirrored unlearning with noise-consistent normalized skew (paper Sec. 2)."""

from __future__ import annotations

import logging

from mucs_pipeline import layout as io
from mucs_pipeline.attribution.base import Context, Method
from mucs_pipeline.attribution.scoring import (
    cached_loss_matrix,
    loss_matrix,
    noise_bank,
    normalized_skew,
)
from mucs_pipeline.attribution.unlearn import unlearn

log = logging.getLogger(__name__)


class MUCS(Method):
    name = "mucs"

    def __init__(self, cfg, ctx: Context):
        super().__init__(cfg, ctx)
        shape = tuple(ctx.data.x.shape[1:])
        self.bank = noise_bank(
            ctx.diffusion, shape, cfg.num_noises, cfg.schedule_fraction, ctx.cfg.seed
        )
        self.loss_f1 = self._f1_losses()

    def _losses(self, net, desc: str):
        """Losses of `net` on every (training item, noise-bank pair): (|Z|, |N|)."""
        ctx = self.ctx
        return loss_matrix(
            net, ctx.diffusion, ctx.data, self.bank, self.cfg.score_batch, ctx.device,
            desc=desc, bf16=ctx.cfg.trainer.bf16_scoring,
        )  # fmt: skip

    def _f1_losses(self):
        key = io.config_hash(
            "mucs", self.cfg.num_noises, self.cfg.schedule_fraction, self.ctx.cfg.seed,
            self.ctx.cfg.trainer.bf16_scoring,
        )  # fmt: skip
        return cached_loss_matrix(self.ctx, self.bank, key, self.cfg.score_batch)

    def score(self, index, x_hat, c_hat):
        ctx = self.ctx
        f2, info = unlearn(
            ctx.net, x_hat, c_hat, ctx.data, ctx.diffusion, ctx.loss_null, self.cfg, ctx.cfg,
            stream=(ctx.cfg.seed, index),
        )  # fmt: skip
        loss_f2 = self._losses(f2, f"score item {index}")
        return normalized_skew(self.loss_f1, loss_f2, self.cfg.eps), info
