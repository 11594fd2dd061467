"""The scoring engine shared by loss-based methods: a noise bank and batched loss matrices."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm import tqdm

from mucs_pipeline import layout as io
from mucs_pipeline import rng
from mucs_pipeline.data import ImageData
from mucs_pipeline.models import Diffusion


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


@torch.inference_mode()
def loss_matrix(
    net: torch.nn.Module,
    diffusion: Diffusion,
    data: ImageData,
    bank: NoiseBank,
    batch_pairs: int,
    device: torch.device,
    desc: str = "score",
    bf16: bool = False,
    fresh_noise: tuple | None = None,
) -> torch.Tensor:
    """L(z_i, sigma_j, n_j, F) for every training item i and pair j: (|Z|, |N|).

    The (item, pair) grid is flattened into batches of about `batch_pairs` forwards;
    `bf16` runs the network under bfloat16 autocast (the loss itself stays float32).
    `fresh_noise` (a stream key) replaces the bank's shared noises by independent ones per
    (item, pair), for the non-consistent ablation (Table 2, S-C2).
    """
    net = net.to(device).eval()
    n_pairs = len(bank.sigma)
    per = max(1, batch_pairs // n_pairs)  # training items per forward batch
    sigma, noise = bank.sigma.to(device), bank.noise.to(device)
    out = torch.empty(len(data), n_pairs)
    for start in tqdm(range(0, len(data), per), desc=desc, leave=False):
        x = data.x[start : start + per].to(device)
        b = x.shape[0]
        cond = None
        if data.cond is not None:
            cond = data.cond[start : start + b].to(device).repeat_interleave(n_pairs, 0)
        noises = noise.repeat(b, 1, 1, 1)
        if fresh_noise is not None:
            gen = rng.generator("fresh-noise", *fresh_noise, start)
            noises = torch.randn(noises.shape, generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            losses = diffusion.loss(
                net, x.repeat_interleave(n_pairs, 0), cond, sigma.repeat(b), noises
            )
        out[start : start + b] = losses.view(b, n_pairs).float().cpu()
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
        ctx.net, ctx.diffusion, ctx.data, bank, batch_pairs, ctx.device, desc=desc,
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
