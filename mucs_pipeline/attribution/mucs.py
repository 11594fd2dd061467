"""MUCS: mirrored unlearning with noise-consistent normalized skew (paper Sec. 2)."""

from __future__ import annotations

import logging

from mucs_pipeline import artifacts as io
from mucs_pipeline.attribution.base import Context, Method
from mucs_pipeline.attribution.scoring import (
    SCORE_RULES,
    cached_loss_matrix,
    loss_matrix,
    noise_bank,
    training_bank,
)
from mucs_pipeline.attribution.unlearn import unlearn

log = logging.getLogger(__name__)


class MUCS(Method):
    name = "mucs"

    def __init__(self, cfg, ctx: Context):
        super().__init__(cfg, ctx)
        shape = tuple(ctx.data.x.shape[1:])
        # Table 2 switches; absent keys keep the proposed method.
        self.score_sigma = cfg.get("score_sigma", "schedule")
        self.consistent = cfg.get("noise_consistent", True)
        self.rule = cfg.get("score_rule", "skew")
        if self.rule not in SCORE_RULES or self.score_sigma not in ("schedule", "training"):
            raise ValueError(
                f"method.score_rule={self.rule!r} / method.score_sigma={self.score_sigma!r}: "
                f"expected one of {sorted(SCORE_RULES)} / 'schedule' or 'training'"
            )
        if self.score_sigma == "schedule":
            self.bank = noise_bank(
                ctx.diffusion, shape, cfg.num_noises, cfg.schedule_fraction, ctx.cfg.seed
            )
        else:  # S-C3: sigmas from the training distribution
            self.bank = training_bank(ctx.diffusion, shape, cfg.num_noises, ctx.cfg.seed, "mucs")
        self.loss_f1 = self._f1_losses()
        # k unlearned models scored in one vmapped pass; S-C2 draws noises per item.
        self.items_per_pass = cfg.get("items_per_pass", 1) if self.consistent else 1

    def _losses(self, net, desc: str, fresh: tuple | None = None, reduce=None):
        """Losses of `net` on every (training item, noise-bank pair): (|Z|, |N|), or their
        per-item `reduce` (see `loss_matrix`)."""
        ctx = self.ctx
        return loss_matrix(
            net, ctx.diffusion, ctx.data, self.bank, self.cfg.score_batch, ctx.cfg.trainer,
            desc=desc, bf16=ctx.cfg.trainer.bf16_scoring,
            fresh_noise=None if self.consistent else fresh, reduce=reduce,
        )  # fmt: skip

    def _skew(self, items, loss_f2):
        """The score rule on one batch: F2's (k, b, |N|) losses against F1's rows."""
        loss_f1 = self.loss_f1[items]
        if not self.consistent:  # S-C2, as the release: independent pairs are compared in mean
            loss_f1, loss_f2 = loss_f1.mean(-1, keepdim=True), loss_f2.mean(-1, keepdim=True)
        return SCORE_RULES[self.rule](loss_f1, loss_f2, self.cfg.eps)

    def _f1_losses(self):
        """F1 losses do not depend on the generated item: computed once per run, cached."""
        if not self.consistent:  # S-C2: F1's noises differ from every F2's
            return self._losses(self.ctx.net, "F1 losses", fresh=("f1", self.ctx.cfg.seed))
        key = io.config_hash(
            "mucs", self.cfg.num_noises, self.cfg.schedule_fraction, self.ctx.cfg.seed,
            self.ctx.cfg.trainer.bf16_scoring, self.score_sigma,
        )  # fmt: skip
        return cached_loss_matrix(self.ctx, self.bank, key, self.cfg.score_batch)

    def unlearn(self, index, x_hat, c_hat):
        ctx = self.ctx
        return unlearn(
            ctx.net, x_hat, c_hat, ctx.data, ctx.diffusion, ctx.loss_null, self.cfg, ctx.cfg,
            stream=(ctx.cfg.seed, index),
        )  # fmt: skip

    def score(self, index, x_hat, c_hat):
        f2, info = self.unlearn(index, x_hat, c_hat)
        fresh = ("f2", self.ctx.cfg.seed, index)
        return self._losses(f2, f"score item {index}", fresh, self._skew), info

    def score_many(self, indices, images, conds):
        if len(indices) == 1:
            return [self.score(indices[0], images[0], conds[0])]
        items = zip(indices, images, conds, strict=True)
        f2s, infos = zip(*[self.unlearn(*item) for item in items], strict=True)
        scores = self._losses(list(f2s), f"score items {indices}", reduce=self._skew)  # (k, |Z|)
        return list(zip(scores, infos, strict=True))
