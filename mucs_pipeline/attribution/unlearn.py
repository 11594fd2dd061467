"""MUCS mirrored unlearning (Eq. 2): fine-tune on Z, clamped gradient ascent on the item."""

from __future__ import annotations

import copy
import fnmatch
import logging

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mucs_pipeline import rng
from mucs_pipeline.data import ImageData
from mucs_pipeline.models import Diffusion
from mucs_pipeline.training import NonFiniteLossError, Steps, make_trainer, training_losses

log = logging.getLogger(__name__)


def select_parameters(net: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Names of the parameters matched by the glob patterns (C4: the MLP weights)."""
    names = [n for n, _ in net.named_parameters() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not names:
        raise ValueError(f"method.params={list(patterns)} matches no parameter of the network")
    return names


class Unlearning(L.LightningModule):
    """Minimise L_FT - lam * mean(min(L(z_hat), L_null)), updating only the selected weights."""

    def __init__(
        self,
        net: torch.nn.Module,
        diffusion: Diffusion,
        data: ImageData,
        x_hat: torch.Tensor,
        c_hat: torch.Tensor | None,
        loss_null: float,
        cfg: DictConfig,
        train_cfg: DictConfig,
        stream: tuple,
    ):
        super().__init__()
        self.net = net
        trainable = set(select_parameters(net, cfg.params))
        for name, p in net.named_parameters():
            p.requires_grad_(name in trainable)
        self.diffusion, self.data, self.cfg, self.train_cfg = diffusion, data, cfg, train_cfg
        self.x_hat, self.c_hat, self.loss_null, self.stream = x_hat, c_hat, loss_null, stream
        self.trajectory: list[tuple[float, float]] = []  # (L_FT, L_GA) per step
        self.met_stop_rule = False

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Steps(), batch_size=None)

    def training_step(self, _batch: int, _batch_idx: int) -> torch.Tensor:
        step, dev = self.global_step, self.device
        gen = rng.generator("unlearn", *self.stream, step)
        n, shape = len(self.data), self.data.x.shape[1:]
        b = min(self.cfg.batch_size, n)
        idx = torch.randperm(n, generator=gen)[:b]  # z uniformly without replacement
        with rng.global_stream(dev, "unlearn-dropout", *self.stream, step):
            tc = self.train_cfg  # C3: the pretraining configuration
            loss_ft = training_losses(
                self.net, self.diffusion, self.data, idx, gen, dev, tc.cond_drop, tc.augment_p
            ).mean()
            g = self.cfg.ga_draws  # independent (sigma, n) draws for the generated item
            if self.cfg.get("unlearn_sigma", "training") == "schedule":  # Table 2, U-C2
                levels = self.diffusion.schedule(self.cfg.get("unlearn_schedule_steps", 32))
                sigma_g = levels[torch.randint(len(levels), (g,), generator=gen)].float()
            else:
                sigma_g = self.diffusion.training_sigma(g, gen)
            noise_g = torch.randn((g, *shape), generator=gen)
            c_hat = None if self.c_hat is None else self.c_hat.expand(g, -1).to(dev)
            loss_hat = self.diffusion.loss(
                self.net,
                self.x_hat.expand(g, *shape).to(dev),
                c_hat,
                sigma_g.to(dev),
                noise_g.to(dev),
            )
        if self.cfg.clamp:
            loss_hat = loss_hat.clamp(max=self.loss_null)  # min(L(z_hat), L_null)
        loss_ga = loss_hat.mean()
        loss = loss_ft - self.cfg.lam * loss_ga  # Eq. 2
        if not torch.isfinite(loss):
            last = self.trajectory[-1] if self.trajectory else None
            raise NonFiniteLossError(
                f"non-finite unlearning loss at step {step} of item {self.stream}; "
                f"last finite (L_FT, L_GA) = {last}"
            )
        self.trajectory.append((loss_ft.item(), loss_ga.item()))
        self.log("unlearn/loss_ga", loss_ga, prog_bar=True)
        if self.cfg.stop_rule and loss_ga.item() >= self.cfg.stop_ratio * self.loss_null:
            self.met_stop_rule = True
            self.trainer.should_stop = True
        return loss

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        lr = self.train_cfg.lr * self.cfg.lr_scale  # C3: pretraining lr / 10, constant
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.train_cfg.weight_decay)


def unlearn(
    f1: torch.nn.Module,
    x_hat: torch.Tensor,
    c_hat: torch.Tensor | None,
    data: ImageData,
    diffusion: Diffusion,
    loss_null: float,
    cfg: DictConfig,
    run_cfg: DictConfig,
    stream: tuple,
) -> tuple[torch.nn.Module, dict]:
    """F2: a copy of F1 that has unlearned z_hat; info has the steps and loss trajectory."""
    f2 = copy.deepcopy(f1).train()
    module = Unlearning(f2, diffusion, data, x_hat, c_hat, loss_null, cfg, run_cfg.pretrain, stream)
    trainer = make_trainer(run_cfg, None, cfg.max_steps, distributed=False)  # whole on each rank
    trainer.fit(module)
    steps = len(module.trajectory)
    if cfg.stop_rule and not module.met_stop_rule:
        log.warning(
            "unlearning item %s hit method.max_steps=%d before L_GA >= %.2f * L_null "
            "(last L_GA %.4f, L_null %.4f)",
            stream,
            cfg.max_steps,
            cfg.stop_ratio,
            module.trajectory[-1][1],
            loss_null,
        )
    for p in f2.parameters():
        p.requires_grad_(True)
    info = {
        "steps": steps,
        "hit_max_steps": bool(cfg.stop_rule and not module.met_stop_rule),
        "trajectory": torch.tensor(module.trajectory, dtype=torch.float32),
    }
    return f2.eval(), info
