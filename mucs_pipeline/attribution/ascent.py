"""Unlearning baselines: Forward-INF (Ko et al. 2024) and AbU (Wang et al. 2024).

Both take gradient-ascent steps on the generated item's loss, from F1, and score each
training item by how its loss moved, on a fixed bank of (sigma, n) pairs drawn from the
training distributions (F1's losses on that bank are computed once per run):

    Forward-INF:  a_i = | mean_j L(z_i; F') - mean_j L(z_i; F1) |    (Adam steps on -L(z_hat))
    AbU:          a_i = mean_j L(z_i; F') - mean_j L(z_i; F1)        (signed)
                  with F' = F1 + lr * g / (N * Fisher), g = grad L(z_hat), Fisher the diagonal
                  empirical Fisher of the training loss (reference: PeterWang512/
                  AttributeByUnlearning, compute_influence.py, with N the training-set size).

The few ascent steps run as a plain loop rather than a Lightning fit: there is no data
loader, checkpoint or logging to manage for one to ten updates.
"""

from __future__ import annotations

import copy

import torch
from tqdm import tqdm

from mucs_pipeline import artifacts as io
from mucs_pipeline import augment as augmentation
from mucs_pipeline import rng
from mucs_pipeline.attribution.base import (
    POSITIVE_INT,
    Context,
    Method,
    item_losses,
    select_parameters,
)
from mucs_pipeline.attribution.gradients import PerSampleGradients
from mucs_pipeline.attribution.scoring import cached_loss_matrix, loss_matrix, training_bank


class LossChange(Method):
    """Shared parts: the scoring bank, F1's cached losses, the generated item's loss."""

    bf16_scoring = True
    ranges = {"num_noises": POSITIVE_INT}

    def __init__(self, cfg, ctx: Context):
        super().__init__(cfg, ctx)
        shape = tuple(ctx.data.x.shape[1:])
        self.bank = training_bank(ctx.diffusion, shape, cfg.num_noises, ctx.cfg.seed, "score")
        key = io.config_hash(
            "training-bank", cfg.num_noises, ctx.cfg.seed, ctx.cfg.trainer.bf16_scoring
        )
        self.loss_f1 = cached_loss_matrix(ctx, self.bank, key, cfg.score_batch).mean(dim=1)

    @classmethod
    def cost(cls, cfg, n, m):
        trained = m * cfg.steps * cfg.ga_draws  # the ascent on each item's draws
        score = (m + 1) * n * cfg.num_noises  # every ascended copy, plus F1 once
        return trained + score, m * cfg.steps, trained

    def item_loss(self, net, x_hat, c_hat, index: int, step: int) -> torch.Tensor:
        """Mean loss of the generated item over `ga_draws` training-distribution draws."""
        gen = rng.generator(self.name, self.ctx.cfg.seed, index, step)
        ctx = self.ctx
        return item_losses(
            net, ctx.diffusion, x_hat, c_hat, self.cfg.ga_draws, gen, ctx.device
        ).mean()

    def loss_change(self, net, index: int) -> torch.Tensor:
        """mean_j L(z_i; net) - mean_j L(z_i; F1), per training item."""
        ctx = self.ctx
        return loss_matrix(
            net, ctx.diffusion, ctx.data, self.bank, self.cfg.score_batch, ctx.cfg.trainer,
            desc=f"score item {index}", bf16=ctx.cfg.trainer.bf16_scoring,
            reduce=lambda items, after: after.mean(dim=-1) - self.loss_f1[items],
        )  # fmt: skip

    def ascended_copy(self) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
        """A copy of F1 (eval mode: no dropout) with only the selected weights trainable."""
        net = copy.deepcopy(self.ctx.net).to(self.ctx.device).eval()
        names = set(select_parameters(net, list(self.cfg.params)))
        params = []
        for name, p in net.named_parameters():
            p.requires_grad_(name in names)
            if name in names:
                params.append(p)
        return net, params


class ForwardINF(LossChange):
    name = "forward_inf"

    def score(self, index, x_hat, c_hat):
        net, params = self.ascended_copy()
        opt = torch.optim.Adam(params, lr=self.cfg.lr)
        for step in range(self.cfg.steps):
            opt.zero_grad()
            (-self.item_loss(net, x_hat, c_hat, index, step)).backward()  # ascent
            opt.step()
        return self.loss_change(net, index).abs(), {}


class AbU(LossChange):
    name = "abu"

    def __init__(self, cfg, ctx: Context):
        super().__init__(cfg, ctx)
        self.fisher = self._cached_fisher()

    @classmethod
    def cost(cls, cfg, n, m):
        forwards, steps, trained = super().cost(cfg, n, m)
        fisher = n * cfg.fisher_epochs  # one per-sample gradient per item and epoch
        return forwards + fisher, steps, trained + fisher

    def _cached_fisher(self) -> dict[str, torch.Tensor]:
        ctx, cfg = self.ctx, self.cfg
        key = io.config_hash("fisher", cfg.params, cfg.fisher_epochs, cfg.chunk, ctx.cfg.seed)
        return ctx.cached(
            f"fisher-{key}.pt",
            lambda: diagonal_fisher(
                ctx.net, ctx, list(cfg.params), cfg.fisher_epochs, cfg.chunk, ctx.cfg.seed
            ),
        )

    def score(self, index, x_hat, c_hat):
        net, _ = self.ascended_copy()
        named = dict(net.named_parameters())
        n = len(self.ctx.data)
        for step in range(self.cfg.steps):
            loss = self.item_loss(net, x_hat, c_hat, index, step)
            grads = torch.autograd.grad(loss, [named[k] for k in self.fisher])
            with torch.no_grad():
                for (k, f), g in zip(self.fisher.items(), grads, strict=True):
                    f = f.to(g.device)
                    floor = self.cfg.fisher_floor * f.mean()  # no division by ~0 curvature
                    named[k].add_(self.cfg.lr * g / (n * f.clamp(min=floor)))
        return self.loss_change(net, index), {}


def diagonal_fisher(
    net: torch.nn.Module,
    ctx: Context,
    patterns: list[str],
    epochs: int,
    chunk: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Mean over training items (and epochs) of the squared per-sample loss gradient.

    Each item gets one fresh (sigma, n) draw per epoch and, when the training recipe flips
    (`pretrain.augment`), a random flip, as in AbU's compute_fisher.py.
    """
    grads = PerSampleGradients(net, patterns, ctx.device)
    data, shape = ctx.data, tuple(ctx.data.x.shape[1:])
    total = torch.zeros(grads.dim, dtype=torch.float64)

    def objective(model, x, cond, sigma, noise):
        return ctx.diffusion.loss(model, x, cond, sigma, noise).mean()

    for epoch in range(epochs):
        gen = rng.generator("fisher", seed, epoch)
        sigma = ctx.diffusion.training_sigma(len(data), gen).reshape(-1, 1)
        noise = torch.randn((len(data), 1, *shape), generator=gen)
        x = augmentation.xflip(data.x, ctx.cfg.pretrain.augment, gen)
        chunks = grads(objective, x, data.cond, sigma, noise, chunk)
        for g in tqdm(
            chunks, total=-(-len(data) // chunk), desc=f"fisher epoch {epoch}", leave=False
        ):
            total += g.double().square().sum(dim=0).cpu()
    mean = (total / (epochs * len(data))).float()
    out, start = {}, 0
    for name in grads.names:
        numel = grads.params[name].numel()
        out[name] = mean[start : start + numel].reshape(grads.params[name].shape)
        start += numel
    return out
