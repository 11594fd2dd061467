"""The scoring engine shared by loss-based methods: a noise bank and batched loss matrices."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from mucs_pipeline import distributed as dist
from mucs_pipeline import layout as io
from mucs_pipeline import rng
from mucs_pipeline.data import ImageData
from mucs_pipeline.models import Diffusion
from mucs_pipeline.training import placement

log = logging.getLogger(__name__)


@dataclass
class NoiseBank:
    """The pairs N = {(sigma_j, n_j)}, shared by every training item and by F1 and F2."""

    sigma: torch.Tensor  # (|N|,)
    noise: torch.Tensor  # (|N|, C, H, W)


def noise_bank(
    diffusion: Diffusion, shape: tuple[int, ...], num_noises: int, fraction: float, seed: int
) -> NoiseBank:
    """Sigmas: the first |N| of floor(|N|/fraction) generation-schedule levels (descending).

    Noises: drawn once from the training noise distribution (standard normal).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"method.schedule_fraction={fraction}: expected a value in (0, 1]")
    total = math.floor(num_noises / fraction + 1e-9)  # floor(100 / 0.7) = 142; 3 / 0.1 = 30
    sigma = diffusion.schedule(total)[:num_noises].float()
    noise = torch.randn((num_noises, *shape), generator=rng.generator("noise-bank", seed))
    return NoiseBank(sigma=sigma, noise=noise)


def training_bank(
    diffusion: Diffusion, shape: tuple[int, ...], num_noises: int, seed: int, name: str
) -> NoiseBank:
    """|N| (sigma, n) pairs from the training distributions, fixed by (name, seed)."""
    gen = rng.generator("training-bank", name, seed)
    sigma = diffusion.training_sigma(num_noises, gen).float()
    return NoiseBank(sigma=sigma, noise=torch.randn((num_noises, *shape), generator=gen))


class LossGrid(L.LightningModule):
    """Lightning predict over training items: each batch's losses on every bank pair."""

    def __init__(
        self,
        net: torch.nn.Module,
        diffusion: Diffusion,
        data: ImageData,
        bank: NoiseBank,
        bf16: bool,
        fresh_noise: tuple | None,
    ):
        super().__init__()
        self.net, self.diffusion, self.data = net.eval(), diffusion, data
        self.register_buffer("sigma", bank.sigma)
        self.register_buffer("noise", bank.noise)
        self.bf16, self.fresh_noise = bf16, fresh_noise

    def predict_step(self, idx: torch.Tensor, _batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        dev, idx = self.device, idx.cpu()
        b, n_pairs = len(idx), len(self.sigma)
        x = self.data.x[idx].to(dev).repeat_interleave(n_pairs, 0)
        cond = None
        if self.data.cond is not None:
            cond = self.data.cond[idx].to(dev).repeat_interleave(n_pairs, 0)
        if self.fresh_noise is None:
            noises = self.noise.repeat(b, 1, 1, 1)
        else:  # one stream per training item, so the draws do not depend on the batching
            shape = self.noise.shape
            noises = torch.cat(
                [torch.randn(shape, generator=rng.generator("fresh-noise", *self.fresh_noise,
                                                            int(i))) for i in idx]
            ).to(dev)  # fmt: skip
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            losses = self.diffusion.loss(self.net, x, cond, self.sigma.repeat(b), noises)
        return idx, losses.view(b, n_pairs).float().cpu()


def loss_matrix(
    net: torch.nn.Module,
    diffusion: Diffusion,
    data: ImageData,
    bank: NoiseBank,
    batch_pairs: int,
    trainer_cfg: DictConfig | None = None,
    desc: str = "score",
    bf16: bool = False,
    fresh_noise: tuple | None = None,
) -> torch.Tensor:
    """L(z_i, sigma_j, n_j, F) for every training item i and pair j: (|Z|, |N|).

    A Lightning predict over the training items in batches of about `batch_pairs`
    forwards (the (item, pair) grid flattened), on the devices of `trainer_cfg` (None:
    this CPU). Under trainer=ddp a DistributedSampler splits the items across the ranks
    and every rank receives the whole matrix. `bf16` runs the network under bfloat16
    autocast (the loss itself stays float32). `fresh_noise` (a stream key) replaces the
    bank's shared noises by independent ones per (item, pair), for the non-consistent
    ablation (Table 2, S-C2).
    """
    tc = trainer_cfg if trainer_cfg is not None else OmegaConf.create({"accelerator": "cpu"})
    per = max(1, batch_pairs // len(bank.sigma))  # training items per forward batch
    loader = DataLoader(torch.arange(len(data)), batch_size=per)
    trainer = L.Trainer(
        **placement(tc), logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=bool(tc.get("progress_bar", False)),
    )  # fmt: skip
    module = LossGrid(net, diffusion, data, bank, bf16, fresh_noise)
    parts = trainer.predict(module, loader)
    log.debug("%s: rank %d scored %d of %d items", desc, dist.rank(), sum(len(i) for i, _ in parts),
              len(data))  # fmt: skip
    out = torch.empty(len(data), len(bank.sigma))
    for rank_parts in dist.gather(parts):
        for idx, losses in rank_parts:
            out[idx] = losses
    return out


def cached_loss_matrix(
    ctx, bank: NoiseBank, key: str, batch_pairs: int, desc: str = "F1 losses"
) -> torch.Tensor:
    """F1's loss matrix on `bank`, computed once per run and kept in the run cache.

    F1 losses do not depend on the generated item, so every item reuses them; `key` must
    name everything the bank depends on.
    """
    path = ctx.cache_dir / f"f1_losses-{key}.pt"
    if path.exists():
        return io.load(path)
    losses = loss_matrix(
        ctx.net, ctx.diffusion, ctx.data, bank, batch_pairs, ctx.cfg.trainer, desc=desc,
        bf16=ctx.cfg.trainer.bf16_scoring,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    io.atomic_save(losses, path)
    return losses


def normalized_skew(loss_1: torch.Tensor, loss_2: torch.Tensor, eps: float) -> torch.Tensor:
    """Eq. 3: mean over pairs of (L2 - L1) / (|L2| + |L1| + eps); (|Z|, |N|) -> (|Z|,)."""
    return ((loss_2 - loss_1) / (loss_2.abs() + loss_1.abs() + eps)).mean(dim=1)


def loss_subtraction(loss_1: torch.Tensor, loss_2: torch.Tensor, eps: float) -> torch.Tensor:
    """Table 2, S-C1: the plain difference of mean losses, mean(L2) - mean(L1)."""
    return loss_2.mean(dim=1) - loss_1.mean(dim=1)


SCORE_RULES = {"skew": normalized_skew, "subtract": loss_subtraction}
