"""Influence-function baselines: D-TRAK (Zheng et al. 2024) and DAS (Lin et al. 2025).

Both score with a TRAK kernel over projected per-sample gradient features phi:

    D-TRAK:  a(z_hat) = phi(z_hat) (Phi^T Phi + lambda I)^-1 Phi^T
    DAS:     a(z_hat) = phi(z_hat) (Phi^T Phi + lambda I)^-1 Phi^T R,   R = diag(r_i)

D-TRAK's phi differentiates the mean squared network output ("mean-squared-l2-norm" of
the sail-sg/D-TRAK release), averaged over the draws before projection. DAS follows the
Jinxu-Lin/DAS release (the paper's linearised score, "DAS1" of CIFAR10/07_score.py):
phi differentiates the mean network output, each draw's gradient is normalised to unit
L2 norm before averaging ("per-timestep normalisation"), and r_i, the training-error
weight, is the mean over draws of sqrt(L(z_i, draw)) after normalising that vector of
draws to unit norm. Draws: `num_noises` (sigma, n) pairs from the training distributions,
shared by every item. lambda = damping * trace(Phi^T Phi) / min(|Z|, dim), so that one damping
value carries over between models of different gradient scale.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from mucs_pipeline import artifacts as io
from mucs_pipeline.attribution.base import POSITIVE_INT, Context, Method
from mucs_pipeline.attribution.gradients import PerSampleGradients, Projector
from mucs_pipeline.attribution.scoring import loss_matrix, training_bank

log = logging.getLogger(__name__)


class DTRAK(Method):
    name = "dtrak"
    ranges = {"num_noises": POSITIVE_INT}

    def __init__(self, cfg, ctx: Context):
        super().__init__(cfg, ctx)
        self.bank = training_bank(
            ctx.diffusion, tuple(ctx.data.x.shape[1:]), cfg.num_noises, ctx.cfg.seed, self.name
        )
        self.grads = PerSampleGradients(ctx.net, list(cfg.params), ctx.device)
        self.project = Projector(
            self.grads.dim,
            cfg.proj_dim,
            ctx.cfg.seed,
            cfg.proj_type,
            ctx.device,
        )
        phi = self.training_features()
        self.solve = kernel_solver(phi, cfg.damping)
        self.phi = phi
        self.weights = self.training_weights()
        self.item_features: torch.Tensor | None = None

    @classmethod
    def cost(cls, cfg, n, m):
        trained = (n + m) * cfg.num_noises  # one forward and backward per (item, draw)
        return trained, 0, trained

    # -- features -------------------------------------------------------------------
    def objective(self, model, x, cond, sigma, noise) -> torch.Tensor:
        """Mean over draws and pixels of the squared network output (D-TRAK's function)."""
        return self.ctx.diffusion.output(model, x, cond, sigma, noise).square().mean()

    def gradients(self, x: torch.Tensor, cond: torch.Tensor | None):
        """Per-item gradients averaged over the shared draws, chunk by chunk."""
        return self.grads(self.objective, x, cond, self.bank.sigma, self.bank.noise, self.cfg.chunk)

    def features(self, x: torch.Tensor, cond: torch.Tensor | None, desc: str) -> torch.Tensor:
        """Projected features of items x: (N, proj_dim). Gradients are projected a shard at a
        time, so that the projector regenerates its random matrix once per shard."""
        per_shard = self.shard_items()
        out = []
        chunks = self.gradients(x, cond)
        bar = tqdm(total=len(x), desc=desc, leave=False)
        shard: list[torch.Tensor] = []
        for g in chunks:
            shard.append(g)
            bar.update(len(g))
            if sum(len(s) for s in shard) >= per_shard:
                out.append(self.project(torch.cat(shard)).cpu())
                shard = []
        if shard:
            out.append(self.project(torch.cat(shard)).cpu())
        bar.close()
        return torch.cat(out)

    def shard_items(self) -> int:
        """Items per projected shard: `shard_items`, or what fits in `shard_gb` of gradients."""
        if self.cfg.shard_items:
            return int(self.cfg.shard_items)
        return max(1, int(self.cfg.shard_gb * 2**30 // (4 * self.grads.dim)))

    def training_features(self) -> torch.Tensor:
        """Phi, (|Z|, proj_dim): computed once per run, cached on disk shard by shard so that
        a killed job resumes with the shards it finished."""
        data, cfg = self.ctx.data, self.cfg
        # Damping acts on the kernel only: a damping sweep reuses one set of features.
        feature_cfg = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items()
                       if k != "damping"}  # fmt: skip
        key = io.config_hash(self.name, feature_cfg, self.ctx.cfg.seed)
        folder = self.ctx.cache_dir / f"{self.name}_features-{key}"
        folder.mkdir(parents=True, exist_ok=True)
        per_shard = self.shard_items()
        parts = []
        strict = self.ctx.cfg.get("strict", False)
        for i, start in enumerate(range(0, len(data), per_shard)):
            sl = slice(start, start + per_shard)
            cond = None if data.cond is None else data.cond[sl]
            shard = partial(self.features, data.x[sl], cond, f"{self.name} features shard {i}")
            parts.append(io.cached(folder / f"shard{i:05d}.pt", shard, strict=strict))
        return torch.cat(parts)

    def training_weights(self) -> torch.Tensor | None:
        """The per-item reweighting R (None for D-TRAK)."""
        return None

    # -- scores ---------------------------------------------------------------------
    def prepare(self, images: torch.Tensor, cond: torch.Tensor | None) -> None:
        """Features of all generated items in one projection pass."""
        self.item_features = self.features(images, cond, f"{self.name} item features")

    def score(self, index, x_hat, c_hat):
        if self.item_features is not None:
            phi_hat = self.item_features[index]
        else:  # scored without prepare(): this item alone
            phi_hat = self.features(x_hat[None], c_hat, f"{self.name} item {index}")[0]
        scores = self.solve(phi_hat)
        if self.weights is not None:
            scores = scores * self.weights
        return scores.float(), {}


class DAS(DTRAK):
    name = "das"

    def objective(self, model, x, cond, sigma, noise):
        """Mean over pixels of the network output, one value per draw (J,)."""
        return self.ctx.diffusion.output(model, x, cond, sigma, noise).flatten(1).mean(dim=1)

    def gradients(self, x, cond):
        """Per-draw gradients normalised to unit norm, then averaged over the draws."""
        return self.grads.normalized_mean(
            self.objective, x, cond, self.bank.sigma, self.bank.noise, self.cfg.chunk
        )

    def training_weights(self):
        """r_i, from F1's losses on the shared draws; computed once per run, cached."""
        ctx, cfg = self.ctx, self.cfg
        key = io.config_hash("das-weights", cfg.num_noises, ctx.cfg.seed)

        def weight(_items, losses):  # (1, b, J) -> (1, b)
            err = losses.clamp(min=0).sqrt()
            return (err / (err.norm(dim=-1, keepdim=True) + 1e-8)).mean(dim=-1)

        return ctx.cached(
            f"das_weights-{key}.pt",
            lambda: loss_matrix(
                ctx.net, ctx.diffusion, ctx.data, self.bank, cfg.score_batch, ctx.cfg.trainer,
                desc="das training errors", reduce=weight,
            ),
        )  # fmt: skip


def kernel_solver(phi: torch.Tensor, damping: float):
    """phi_hat -> phi_hat (Phi^T Phi + lambda I)^-1 Phi^T, in float64, with lambda relative.

    With fewer items than feature dimensions the same value comes from the |Z| x |Z| Gram
    matrix (push-through identity: (A^T A + l I)^-1 A^T = A^T (A A^T + l I)^-1).
    """
    start = time.perf_counter()
    phi = phi.double()
    n, k = phi.shape
    lam = damping * phi.square().sum() / min(n, k)  # damping x mean non-zero eigenvalue

    def cholesky(matrix):
        factor, info = torch.linalg.cholesky_ex(matrix)
        if info != 0:
            raise ValueError(
                f"the damped kernel is singular (damping={damping}, {n} items, dim {k}); "
                "raise method.damping"
            )
        return factor

    if n < k:
        factor = cholesky(phi @ phi.T + lam * torch.eye(n, dtype=phi.dtype))

        def solve(phi_hat):
            rhs = (phi @ phi_hat.double()).unsqueeze(1)
            return torch.cholesky_solve(rhs, factor).squeeze(1)
    else:
        factor = cholesky(phi.T @ phi + lam * torch.eye(k, dtype=phi.dtype))

        def solve(phi_hat):
            w = torch.cholesky_solve(phi_hat.double().unsqueeze(1), factor).squeeze(1)
            return phi @ w

    log.info("kernel factorised in %.1f s (|Z| %d, dim %d)", time.perf_counter() - start, n, k)
    return solve
