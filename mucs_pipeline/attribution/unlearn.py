"""MUCS mirrored unlearning (Eq. 2): fine-tune on Z, clamped gradient ascent on the item."""

from __future__ import annotations

import copy
import logging
import warnings

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from mucs_pipeline import rng
from mucs_pipeline.attribution.base import item_losses, select_parameters
from mucs_pipeline.data import ImageData
from mucs_pipeline.models import Diffusion
from mucs_pipeline.training import NonFiniteLossError, Steps, make_trainer, training_losses

log = logging.getLogger(__name__)


class ScheduleDraws:
    """A diffusion variant whose training draws take their noise levels from the generation
    schedule instead (Table 2, U-C2, as the release's `t_sched_train`): the largest of
    floor(n / fraction) uniform positions along the schedule, for the fine-tuning and the
    generated item's draws alike."""

    LEVELS = 1001  # the schedule at this resolution stands for its continuous curve

    def __init__(self, diffusion: Diffusion, fraction: float):
        self.diffusion, self.fraction = diffusion, fraction
        self.levels = diffusion.schedule(self.LEVELS).float()  # descending

    def __getattr__(self, name: str):
        return getattr(self.diffusion, name)

    def training_sigma(self, n: int, generator: torch.Generator) -> torch.Tensor:
        total = int(n / self.fraction)
        positions = torch.rand(total, generator=generator).sort().values[:n]
        return self.levels[(positions * (self.LEVELS - 1)).round().long()]


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
        if cfg.get("unlearn_sigma", "training") == "schedule":  # Table 2, U-C2
            diffusion = ScheduleDraws(diffusion, cfg.unlearn_schedule_fraction)
        self.diffusion, self.data, self.cfg, self.train_cfg = diffusion, data, cfg, train_cfg
        self.x_hat, self.c_hat, self.loss_null, self.stream = x_hat, c_hat, loss_null, stream
        self.trajectory: list[tuple[float, float]] = []  # (L_FT, L_GA) per batch
        self.met_stop_rule = False

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Steps(), batch_size=None)

    def on_train_start(self) -> None:
        self.net.eval()  # on purpose, as the release unlearns: no dropout

    def training_step(self, _batch: int, _batch_idx: int) -> torch.Tensor:
        step, dev = self.global_step, self.device
        gen = rng.generator("unlearn", *self.stream, step)
        n = len(self.data)
        b = min(self.cfg.batch_size, n)
        idx = torch.randperm(n, generator=gen)[:b]  # z uniformly without replacement
        # Each training item with its own condition, not augmented (the network is in eval
        # mode: no dropout), as the release unlearns; the rest of C3's recipe is kept.
        loss_ft = training_losses(self.net, self.diffusion, self.data, idx, gen, dev).mean()
        # The generated item at ga_draws independent (sigma, n) draws, with its condition.
        loss_hat = item_losses(
            self.net, self.diffusion, self.x_hat, self.c_hat, self.cfg.ga_draws, gen, dev
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
            if self.cfg.stop_before_step:
                return None  # the release's order: no step with the batch that met the rule
        return loss  # App. A.1: this batch's step is taken, then unlearning stops

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
    f2 = copy.deepcopy(f1)
    module = Unlearning(f2, diffusion, data, x_hat, c_hat, loss_null, cfg, run_cfg.pretrain, stream)
    trainer = make_trainer(run_cfg, None, cfg.max_steps, distributed=False)  # whole on each rank
    with warnings.catch_warnings():
        # Both on purpose: the network unlearns in eval mode, and the release's order ends
        # on a batch without a step.
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
        warnings.filterwarnings("ignore", message=r".*`training_step` returned `None`")
        trainer.fit(module)
    # Optimizer steps: a batch each, but the one that met the rule in the release's order.
    steps = len(module.trajectory) - int(module.met_stop_rule and cfg.stop_before_step)
    if cfg.stop_rule and not module.met_stop_rule:  # the attribute stage warns once, counting
        log.debug(
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
