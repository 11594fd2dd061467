"""Pretraining and retraining as one LightningModule, with common random numbers.

Every random draw of step `s` (batch indices, sigmas, noises, condition drops) comes from
the stream ("train", seed, s). A retrain with common random numbers replays exactly the
pretraining stream from the same initialisation and gives the removed items zero loss
weight, so that the removal is the only difference between F1 and the retrained model.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, IterableDataset

from mucs_pipeline import artifacts as io
from mucs_pipeline import augment as augmentation
from mucs_pipeline import distributed as dist
from mucs_pipeline import rng
from mucs_pipeline.checkpoints import ArtifactCheckpointIO
from mucs_pipeline.data import ImageData, build_dataset
from mucs_pipeline.models import Diffusion, build_model
from mucs_pipeline.terminal import is_terminal, line_progress_callback

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or Inf; the message names the step and the last finite loss."""


class Steps(IterableDataset):
    """An endless stream of placeholders: each training step draws its own batch by step number."""

    def __iter__(self) -> Iterator[int]:
        while True:
            yield 0


def init_model(cfg: DictConfig, data: ImageData, seed: int) -> torch.nn.Module:
    """The network with the run's initialisation (PyTorch defaults under `seed`)."""
    labels = augmentation.labelled(cfg.pretrain.augment)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.stream_seed("init", seed))
        shape = data.x.shape
        return build_model(cfg.model, shape[-1], shape[1], data.cond_dim, labels, cfg.diffusion)


def draw_condition_drop(
    cond: torch.Tensor | None, p: float, gen: torch.Generator
) -> torch.Tensor | None:
    """Replace a fraction p of the conditions by the null (zero) condition, for CFG."""
    if cond is None or p <= 0:
        return cond
    keep = (torch.rand(cond.shape[0], generator=gen) >= p).float()
    return cond * keep[:, None]


def draw_batch(
    diffusion: Diffusion,
    data: ImageData,
    idx: torch.Tensor,
    gen: torch.Generator,
    cond_drop: float = 0.0,
    augment: DictConfig | None = None,
    sample_cond: bool = False,
) -> tuple:
    """The training draws of items `idx` from `gen`, in the stream's order: (x, cond,
    sigma, noise, augmentation labels or None), on the CPU.

    `augment` is a recipe of `mucs_pipeline.augment` (pretrain.augment; None: none);
    `sample_cond` draws one of each item's conditions (COCO's captions), as training does.
    """
    sigma = diffusion.training_sigma(len(idx), gen)
    noise = torch.randn((len(idx), *data.x.shape[1:]), generator=gen)
    if sample_cond:
        cond = data.training_cond(idx, gen)
    else:
        cond = None if data.cond is None else data.cond[idx]
    cond = draw_condition_drop(cond, cond_drop, gen)
    x, labels = augmentation.augment(data.x[idx], augment, gen)
    return x, cond, sigma, noise, labels


def training_losses(
    net: torch.nn.Module,
    diffusion: Diffusion,
    data: ImageData,
    idx: torch.Tensor,
    gen: torch.Generator,
    device: torch.device,
    cond_drop: float = 0.0,
    augment: DictConfig | None = None,
    part: slice = slice(None),
    sample_cond: bool = False,
) -> torch.Tensor:
    """Per-sample losses of items `idx`; sigmas, noises, drops and augmentations from `gen`
    (see draw_batch). `part` picks the batch positions this process computes (its DDP
    share). The draws are made for the whole batch first, so every share sees the
    single-process stream.
    """
    x, cond, sigma, noise, labels = draw_batch(
        diffusion, data, idx, gen, cond_drop, augment, sample_cond
    )
    if labels is not None:  # the network is told which draws were transformed
        net = functools.partial(net, aug=labels[part].to(device))
    return diffusion.loss(
        net,
        x[part].to(device),
        None if cond is None else cond[part].to(device),
        sigma[part].to(device),
        noise[part].to(device),
    )


class Batches:
    """Epoch-wise shuffled batch indices of a training stream, by step number."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            batch_size = n
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm = torch.randperm(self.n, generator=rng.generator("epoch", self.seed, epoch))
            self._epoch = epoch
        return self._perm[pos * self.batch_size : (pos + 1) * self.batch_size]


class DiffusionTraining(L.LightningModule):
    """Train F on a dataset with AdamW, linear warmup, EMA; `weights` zero out removed items."""

    def __init__(
        self,
        net: torch.nn.Module,
        diffusion: Diffusion,
        data: ImageData,
        cfg: DictConfig,
        seed: int,
        weights: torch.Tensor | None = None,
        val_data: ImageData | None = None,
        best_path: Path | None = None,
    ):
        super().__init__()
        self.net = net
        self.ema = AveragedModel(
            net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
        ).requires_grad_(False)  # averaged, not trained (DDP syncs only trained weights)
        self.diffusion, self.data, self.cfg, self.seed = diffusion, data, cfg, seed
        self.weights = torch.ones(len(data)) if weights is None else weights.float()
        self.batches = Batches(len(data), cfg.batch_size, seed)
        self.last_finite = float("nan")
        # Early stopping (pretrain.patience): validation losses of the EMA on val_data; the
        # best EMA so far is kept at best_path. A buffer, so a resumed run knows the best.
        self.val_data, self.best_path = val_data, best_path
        self.register_buffer("best_val", torch.tensor(float("inf")))
        self._val_sums: list[torch.Tensor] = []

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Steps(), batch_size=None)

    def training_step(self, _batch: int, _batch_idx: int) -> torch.Tensor:
        step, dev = self.global_step, self.device
        idx = self.batches.indices(step)
        gen = rng.generator("train", self.seed, step)
        c = self.cfg
        # Under DDP each rank computes every world-th item of the batch; DDP averages the
        # ranks' gradients, hence the factor `world` to recover the full batch's mean.
        rank, world = self.global_rank, self.trainer.world_size
        part = slice(rank, None, world)
        with rng.global_stream(dev, "dropout", self.seed, step):
            losses = training_losses(
                self.net, self.diffusion, self.data, idx, gen, dev, c.cond_drop, c.augment, part,
                sample_cond=True,
            )  # fmt: skip
        w = self.weights[idx]
        kept = w.sum().clamp(min=1.0)  # normalised over the kept items of the whole batch
        loss = (losses * w[part].to(dev)).sum() / kept * world
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss {loss.item()} at step {step}; "
                f"last finite loss {self.last_finite:.4f}"
            )
        self.last_finite = loss.item()
        self.log("train/loss", loss, prog_bar=True, on_step=True, sync_dist=world > 1)
        return loss

    def val_dataloader(self) -> DataLoader:
        return DataLoader(torch.arange(len(self.val_data)), batch_size=self.cfg.batch_size)

    @torch.inference_mode()
    def validation_step(self, idx: torch.Tensor, _batch_idx: int) -> None:
        """The EMA's losses on validation items, each with its own fixed (sigma, n) draw
        (as the release's per-item validation seeds), whatever the batching or the rank."""
        idx, dev = idx.cpu(), self.device
        gens = [rng.generator("valid", self.seed, int(i)) for i in idx]
        sigma = torch.cat([self.diffusion.training_sigma(1, g) for g in gens])
        noise = torch.stack([torch.randn(self.val_data.x.shape[1:], generator=g) for g in gens])
        cond = None if self.val_data.cond is None else self.val_data.cond[idx].to(dev)
        x = self.val_data.x[idx].to(dev)
        losses = self.diffusion.loss(self.ema.module, x, cond, sigma.to(dev), noise.to(dev))
        self._val_sums.append(torch.stack([losses.sum(), torch.tensor(len(idx), device=dev)]))

    def on_validation_epoch_end(self) -> None:
        sums = self.all_gather(torch.stack(self._val_sums).sum(0)).reshape(-1, 2).sum(0)
        self._val_sums.clear()
        val = sums[0] / sums[1]
        self.log("val/loss", val)
        if val < self.best_val:
            self.best_val.fill_(val)
            if self.best_path is not None:
                io.atomic_save(copy.deepcopy(self.ema.module).cpu().state_dict(), self.best_path)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end: checkpoint callbacks run before that hook,
        # and a resumed run must restore an EMA that has seen every finished step.
        self.ema.update_parameters(self.net)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )
        warmup = max(1, self.cfg.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def placement(tc: DictConfig, distributed: bool = True) -> dict:
    """Trainer arguments saying where to run: on every process of the job (trainer=ddp:
    DDP for fit, a DistributedSampler for predict), or on this process's device alone
    (per-item unlearning, which every rank runs whole)."""
    if distributed:
        return {
            "accelerator": tc.accelerator, "devices": tc.get("devices", 1),
            "strategy": tc.get("strategy", "auto"), "num_nodes": tc.get("num_nodes", 1),
        }  # fmt: skip
    devices = [dist.local_rank()] if tc.accelerator == "gpu" else 1
    return {"accelerator": tc.accelerator, "devices": devices, "strategy": "auto", "num_nodes": 1}


def make_trainer(
    cfg: DictConfig,
    folder: Path | None,
    max_steps: int,
    job_type: str | None = None,
    distributed: bool = True,
    method: str | None = None,
    **kwargs,
) -> L.Trainer:
    """A Lightning Trainer from the trainer group; checkpoints go to `folder`/checkpoints.

    With a folder, metrics go to `folder`/logs/metrics.csv and, with logger=wandb, to a W&B
    run of job type `job_type` (the stage) for `method`'s unit, named, tagged and grouped
    by comparison as mucs_pipeline.tracking says (offline unless configured).
    """
    callbacks = list(kwargs.pop("callbacks", []))
    logger: bool | list = False
    if folder is not None and cfg.trainer.progress_bar and not is_terminal():
        callbacks.append(line_progress_callback(f"{job_type} {method or ''}".strip()))
    if folder is not None:
        from lightning.pytorch.callbacks import ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger

        callbacks.append(
            ModelCheckpoint(
                dirpath=folder / "checkpoints",
                filename="last",
                every_n_train_steps=cfg.pretrain.checkpoint_every,
                save_top_k=0,
                save_last=True,
                enable_version_counter=False,
            )
        )
        logger = [CSVLogger(folder, name="logs", version="")]
        if cfg.logger.name == "wandb":
            from mucs_pipeline import tracking

            logger.append(tracking.lightning_logger(cfg, job_type, method, folder))
    return L.Trainer(
        **placement(cfg.trainer, distributed),
        precision=cfg.trainer.precision,
        max_steps=max_steps,
        max_epochs=-1,
        logger=logger,
        callbacks=callbacks,
        plugins=[ArtifactCheckpointIO()],  # atomic writes, checked and safe reads
        enable_checkpointing=folder is not None,
        enable_model_summary=False,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        # Bars on a terminal; in a log file plain lines (pretrain, retrain) or nothing.
        enable_progress_bar=cfg.trainer.progress_bar and is_terminal(),
        **kwargs,
    )


@torch.inference_mode()
def mean_training_loss(cfg: DictConfig, net: torch.nn.Module, data: ImageData, diffusion) -> float:
    """Mean L of `net` over null_loss.num_batches x batch_size draws of (z, sigma, n), z
    without replacement: L_null's draws, so that any network's loss compares to it."""
    total, count = 0.0, 0
    b = min(cfg.null_loss.batch_size, len(data))
    device = next(net.parameters()).device
    for i in range(cfg.null_loss.num_batches):
        gen = rng.generator("null-loss", cfg.seed, i)
        idx = torch.randperm(len(data), generator=gen)[:b]
        total += training_losses(net, diffusion, data, idx, gen, device).sum().item()
        count += b
    return total / count


def train(
    cfg: DictConfig,
    data: ImageData,
    diffusion: Diffusion,
    folder: Path,
    steps: int,
    weights: torch.Tensor | None = None,
    job_type: str = "pretrain",
    method: str | None = None,
) -> torch.nn.Module:
    """Train `steps` updates from the run's init (resuming a checkpoint); return the EMA net.

    With `pretrain.patience`, training stops after that many validations (every
    `pretrain.validate_every` steps, on the dataset's held-out split) without a lower loss,
    and the net returned is the EMA at the best one (`ema_best.pt`), as the release does.
    """
    net = init_model(cfg, data, cfg.seed)
    tc, extra = cfg.pretrain, {"limit_val_batches": 0}
    val_data, best = None, folder / "ema_best.pt"
    if tc.patience is not None:
        from lightning.pytorch.callbacks import EarlyStopping

        val_data = build_dataset(cfg.dataset, split="test")
        extra = {
            "val_check_interval": tc.validate_every,
            "check_val_every_n_epoch": None,  # validate by steps: the step stream is endless
            "num_sanity_val_steps": 0,
            "callbacks": [EarlyStopping("val/loss", patience=tc.patience, mode="min")],
        }
    module = DiffusionTraining(net, diffusion, data, tc, cfg.seed, weights, val_data, best)
    trainer = make_trainer(cfg, folder, steps, job_type=job_type, method=method, **extra)
    last = folder / "checkpoints" / "last.ckpt"
    resume = io.resumable(last, cfg.get("strict", False))  # a damaged one restarts training
    if resume:
        log.info("resuming from %s", last)
    # weights_only: a checkpoint is tensors and plain containers; a crafted pickle is refused.
    trainer.fit(module, ckpt_path=str(last) if resume else None, weights_only=True)
    if cfg.logger.name == "wandb":
        import wandb

        wandb.finish()  # one W&B run per stage job, also within a multirun process
    ema = copy.deepcopy(module.ema.module).cpu().eval()
    if val_data is not None:
        log.info("best validation loss %.4f: F = the EMA then", module.best_val.item())
        ema.load_state_dict(io.load(best))
    return ema
