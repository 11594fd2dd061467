"""The scoring engine shared by loss-based methods: a noise bank and batched loss matrices."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from mucs_pipeline import distributed as dist
from mucs_pipeline import rng
from mucs_pipeline.data import ImageData
from mucs_pipeline.models import Diffusion
from mucs_pipeline.terminal import is_terminal
from mucs_pipeline.training import NonFiniteLossError, placement

log = logging.getLogger(__name__)

# (training item ids (b,), their losses (k, b, |N|)) -> per-item values (k, b)
Reduce = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    """Lightning predict over training items: each batch's losses on every bank pair,
    for one network or for k networks at once (several generated items per pass)."""

    def __init__(
        self,
        nets: list[torch.nn.Module],
        diffusion: Diffusion,
        data: ImageData,
        bank: NoiseBank,
        bf16: bool,
        fresh_noise: tuple | None,
        compile: bool = False,
        reduce: Reduce | None = None,
    ):
        super().__init__()
        self.nets = torch.nn.ModuleList(n.eval() for n in nets)  # moved to the device
        self.diffusion, self.data = diffusion, data
        self.register_buffer("sigma", bank.sigma)
        self.register_buffer("noise", bank.noise)
        self.bf16, self.fresh_noise, self.reduce = bf16, fresh_noise, reduce
        self.last_finite = float("nan")  # the last finite loss seen, for error messages
        self.losses = torch.compile(self._losses, dynamic=False) if compile else self._losses

    def on_predict_start(self) -> None:
        if len(self.nets) > 1:
            # k networks of one architecture as one batched (vmapped) functional call; a
            # tuple, so that Lightning does not move the weightless template as a submodule.
            params, buffers = torch.func.stack_module_state(list(self.nets))
            self.stacked = (copy.deepcopy(self.nets[0]).to("meta"), params, buffers)

    def _losses(self, x, cond, sigma, noises) -> torch.Tensor:
        """(k, B) per-sample losses of the k networks on the same B inputs."""
        if len(self.nets) == 1:
            return self.diffusion.loss(self.nets[0], x, cond, sigma, noises)[None]

        base, params, buffers = self.stacked

        def one(params, buffers):
            def net(*args):
                return torch.func.functional_call(base, (params, buffers), args)

            return self.diffusion.loss(net, x, cond, sigma, noises)

        return torch.func.vmap(one)(params, buffers)

    def predict_step(self, idx: torch.Tensor, _batch_idx: int) -> tuple:
        """(items, their values, (network, item, pair) of non-finite losses, last finite loss).

        The values are the (k, b, |N|) losses, or `reduce(items, losses)`: then only this
        batch's losses ever exist, and the predictions hold per-item values alone."""
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
            losses = self.losses(x, cond, self.sigma.repeat(b), noises)
        losses = losses.view(len(self.nets), b, n_pairs).float().cpu()
        finite = torch.isfinite(losses)
        bad = (~finite).nonzero()
        bad[:, 1] = idx[bad[:, 1]]  # batch positions -> training item ids
        if finite.any():
            self.last_finite = losses[finite][-1].item()
        values = losses if self.reduce is None else self.reduce(idx, losses)
        return idx, values, bad, self.last_finite


def auto_batch(net: torch.nn.Module, data: ImageData, device: torch.device, k: int = 1) -> int:
    """Forwards per scoring batch when `score_batch` is null.

    On a GPU: what fits in 80% of the free memory, from the peak memory of a probe batch
    of 64 forwards (k networks at once need k times the activations). On a CPU, 2048
    forwards: larger batches only leave the caches (measured in docs/benchmarks.md).
    """
    if device.type != "cuda":
        return 2048
    probe = 64
    x = data.x[:1].to(device).expand(probe, *data.x.shape[1:])
    c = None if data.cond is None else data.cond[:1].to(device).expand(probe, -1)
    net = net.to(device).eval()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        net(x, torch.ones(probe, device=device), c)
    per_forward = max(1, (torch.cuda.max_memory_allocated(device) - before) / probe)
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(1 << 17, max(probe, 0.8 * free / (per_forward * k))))


def loss_matrix(
    net: torch.nn.Module | list[torch.nn.Module],
    diffusion: Diffusion,
    data: ImageData,
    bank: NoiseBank,
    batch_pairs: int | None,
    trainer_cfg: DictConfig | None = None,
    desc: str = "score",
    bf16: bool = False,
    fresh_noise: tuple | None = None,
    reduce: Reduce | None = None,
) -> torch.Tensor:
    """L(z_i, sigma_j, n_j, F) for every training item i and pair j: (|Z|, |N|), or
    (k, |Z|, |N|) for a list of k networks, scored in the same pass.

    A Lightning predict over the training items in batches of about `batch_pairs`
    forwards (the (item, pair) grid flattened; None: `auto_batch`), on the devices of
    `trainer_cfg` (None: this CPU). Under trainer=ddp a DistributedSampler splits the
    items across the ranks and every rank receives the whole result. `bf16` runs the
    network under bfloat16 autocast (the loss itself stays float32);
    `trainer_cfg.compile_scoring` compiles the loss with torch.compile. `fresh_noise` (a
    stream key) replaces the bank's shared noises by independent ones per (item, pair),
    for the non-consistent ablation (Table 2, S-C2).

    `reduce(items, losses)` maps each batch's (k, b, |N|) losses to per-item values
    (k, b) inside the predict step; the result is then (|Z|,) or (k, |Z|). This is how
    generated items are scored: the whole loss grid never exists, only one batch of it.
    """
    tc = trainer_cfg if trainer_cfg is not None else OmegaConf.create({"accelerator": "cpu"})
    nets = list(net) if isinstance(net, (list, tuple)) else [net]
    n_pairs = len(bank.sigma)
    if batch_pairs is None:
        batch_pairs = auto_batch(nets[0], data, dist.device(tc), len(nets))
    per = max(1, batch_pairs // (n_pairs * len(nets)))  # training items per forward batch
    loader = DataLoader(torch.arange(len(data)), batch_size=per)
    trainer = L.Trainer(
        **placement(tc), logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=bool(tc.get("progress_bar", False)) and is_terminal(),
    )  # fmt: skip
    module = LossGrid(
        nets, diffusion, data, bank, bf16, fresh_noise, bool(tc.get("compile_scoring", False)),
        reduce,
    )  # fmt: skip
    parts = trainer.predict(module, loader)
    log.debug("%s: rank %d scored %d of %d items", desc, dist.rank(), sum(len(p[0]) for p in parts),
              len(data))  # fmt: skip
    out, bad, last = None, [], float("nan")
    for rank_parts in dist.gather(parts):
        for idx, values, bad_part, last_finite in rank_parts:
            if out is None:
                out = torch.empty(len(nets), len(data), *values.shape[2:])
            out[:, idx] = values
            if len(bad_part):
                bad.append(bad_part)
                last = last_finite if math.isnan(last) else last
    if bad:
        bad = torch.cat(bad)
        raise NonFiniteLossError(
            f"non-finite loss while scoring ({desc}): {len(bad)} of "
            f"{len(nets) * len(data) * n_pairs} losses, e.g. training items "
            f"{bad[:, 1].unique()[:5].tolist()} at noise pairs {bad[:, 2].unique()[:5].tolist()}; "
            f"last finite loss {last:.4f}"
        )
    return out if isinstance(net, (list, tuple)) else out[0]


def cached_loss_matrix(
    ctx, bank: NoiseBank, key: str, batch_pairs: int, desc: str = "F1 losses"
) -> torch.Tensor:
    """F1's loss matrix on `bank`, computed once per run and kept in the run cache.

    F1 losses do not depend on the generated item, so every item reuses them; `key` must
    name everything the bank depends on.
    """
    return ctx.cached(
        f"f1_losses-{key}.pt",
        lambda: loss_matrix(
            ctx.net, ctx.diffusion, ctx.data, bank, batch_pairs, ctx.cfg.trainer, desc=desc,
            bf16=ctx.cfg.trainer.bf16_scoring,
        ),
        mmap=True,  # on reuse, scoring reads the rows of one batch at a time
    )  # fmt: skip
