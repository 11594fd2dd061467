"""MUCS: mirrored unlearning with noise-consistent normalized skew (paper Sec. 2)."""

from __future__ import annotations

import logging

import torch

from mucs_pipeline import artifacts as io
from mucs_pipeline.attribution.base import POSITIVE_INT, Context, Method
from mucs_pipeline.attribution.scoring import (
    cached_loss_matrix,
    loss_matrix,
    noise_bank,
    training_bank,
)
from mucs_pipeline.attribution.unlearn import unlearn

log = logging.getLogger(__name__)


def normalized_skew(loss_1: torch.Tensor, loss_2: torch.Tensor, eps: float) -> torch.Tensor:
    """Eq. 3: mean over pairs of (L2 - L1) / (|L2| + |L1| + eps); (..., |N|) -> (...)."""
    return ((loss_2 - loss_1) / (loss_2.abs() + loss_1.abs() + eps)).mean(dim=-1)


def loss_subtraction(loss_1: torch.Tensor, loss_2: torch.Tensor, eps: float) -> torch.Tensor:
    """Table 2, S-C1: the plain difference of mean losses, mean(L2) - mean(L1)."""
    return loss_2.mean(dim=-1) - loss_1.mean(dim=-1)


SCORE_RULES = {"skew": normalized_skew, "subtract": loss_subtraction}


class MUCS(Method):
    name = "mucs"
    reference = True
    bf16_scoring = True
    ranges = {
        "lam": (lambda v: v > 0, "a number > 0"),
        "max_steps": POSITIVE_INT,
        "num_noises": POSITIVE_INT,
        "schedule_fraction": (lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
        "unlearn_schedule_fraction": (lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
        "eps": (lambda v: v > 0, "a number > 0"),
        "stop_ratio": (lambda v: v > 0, "a number > 0"),
        "items_per_pass": POSITIVE_INT,
    }
    sweep_keys = ("lam",)

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

    def record(self, infos):
        return {
            "steps": torch.tensor([i["steps"] for i in infos]),
            "hit_max_steps": torch.tensor([i["hit_max_steps"] for i in infos]),
            "trajectories": [i["trajectory"] for i in infos],
            "loss_null": self.ctx.loss_null,  # the trajectories' reference line
        }

    @classmethod
    def cost(cls, cfg, n, m):
        per_step = cfg.batch_size + cfg.ga_draws  # L_FT batch and the item's draws
        trained = m * cfg.max_steps * per_step
        score = (m + 1) * n * cfg.num_noises  # F2 of every item, plus F1 once
        return trained + score, m * cfg.max_steps, trained

    @classmethod
    def summary(cls, cfg, scores):
        capped = cls.items_at_cap(scores)
        if capped:  # one line for the unit, not one per item
            log.warning(
                "%s: %d of %d items hit method.max_steps=%d before L_GA >= %g * L_null "
                "(recorded as hit_max_steps; see trajectories.png)",
                cfg.name, capped, len(scores["steps"]), cfg.max_steps, cfg.stop_ratio,
            )  # fmt: skip
        return {
            "unlearn_steps_mean": scores["steps"].float().mean().item(),
            "hit_max_steps": capped,
        }

    @classmethod
    def items_at_cap(cls, scores):
        return int(scores["hit_max_steps"].sum())

    @classmethod
    def figures(cls, cfg, scores, folder, prefix=""):
        """Each item's unlearning losses against L_null and the stop line."""
        from mucs_pipeline.evaluation.figures import trajectories

        path = folder / f"{prefix}trajectories.png"
        # scores.pt written before L_null was recorded in it: the curves without the lines
        trajectories(scores["trajectories"], scores.get("loss_null"), path, cfg.stop_ratio)
        return [path]

    @classmethod
    def log_wandb(cls, run, scores):
        """Per-item unlearning curves (x = unlearning step); steps, cap hits, final L_GA."""
        loss_null = scores["loss_null"]
        run.summary["loss_null"] = loss_null
        run.define_metric("unlearn/step")
        run.define_metric("unlearn/*", step_metric="unlearn/step")
        for i, curve in enumerate(scores["trajectories"]):
            for step, (l_ft, l_ga) in enumerate(curve.tolist()):
                run.log({"unlearn/step": step, f"unlearn/item{i}/L_FT": l_ft,
                         f"unlearn/item{i}/L_GA": l_ga, "unlearn/L_null": loss_null})  # fmt: skip
        final = [float(curve[-1, 1]) for curve in scores["trajectories"]]
        return {
            "steps": [int(s) for s in scores["steps"]],
            "hit_max_steps": [bool(h) for h in scores["hit_max_steps"]],
            "final_L_GA": final,
            "final_L_GA / L_null": [f / loss_null for f in final],
        }
