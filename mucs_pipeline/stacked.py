"""Several small models trained together: the LDS subset models in one pass.

K networks of one architecture, each on its own training subset and random stream, are
trained as one: their parameters are stacked along a leading model axis, the per-model
losses come from `torch.func.vmap` over `functional_call`, and one AdamW steps the stacked
tensors (AdamW and the EMA are elementwise, so this is K independent AdamWs). Each model
follows the pretraining recipe of `mucs_pipeline.training` (its init, batches, sigmas,
noises, condition drops and augmentations from its own stream, warmup, weight decay,
EMA), so that a model trained here equals, up to float rounding, one trained alone by the
Lightning path on its subset (tested). Written here rather than with Lightning: a
LightningModule trains one parameter set, and on a 0.4M-parameter network most of a step
is per-call overhead that stacking K models shares.

With dropout > 0 the masks come from vmap's `randomness="different"` under the step's
seeded global stream: reproducible, but not the masks a model trained alone would draw.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from mucs_pipeline import artifacts as io
from mucs_pipeline import rng
from mucs_pipeline.data import ImageData
from mucs_pipeline.models import Diffusion
from mucs_pipeline.terminal import Progress
from mucs_pipeline.training import Batches, NonFiniteLossError, draw_batch, init_model

log = logging.getLogger(__name__)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors]).contiguous()


def _loss_of(base: torch.nn.Module, buffers: dict, diffusion: Diffusion):
    """The per-sample loss of the network `base` with parameters `p`, for vmap."""

    def model_loss(p, x, cond, sigma, noise, aug=None):
        def net(*args, **kwargs):
            if aug is not None:
                kwargs["aug"] = aug
            return functional_call(base, {**p, **buffers}, args, kwargs)

        return diffusion.loss(net, x, cond, sigma, noise)

    return model_loss


def _attention(device: torch.device):
    """On a CPU, the math attention kernel: vmap has a batching rule for its ops and none
    for the fused CPU kernel (it would loop over the models). CUDA's fused kernels have
    batching rules, and the math kernel would hold every attention matrix."""
    return sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" else contextlib.nullcontext()


def stacked_losses(
    net: torch.nn.Module,
    diffusion: Diffusion,
    states: list[dict[str, torch.Tensor]],
    device: torch.device,
):
    """A function (x, cond, sigma, noise) -> (K, B) losses of the same B draws under the
    K weights `states` of `net`'s architecture, in one vmapped pass; the weights are
    stacked and moved to `device` once."""
    names = [n for n, _ in net.named_parameters()]
    params = {n: _stack([sd[n] for sd in states]).to(device) for n in names}
    buffers = {n: b.to(device) for n, b in net.named_buffers()}
    losses = vmap(_loss_of(net.eval(), buffers, diffusion), in_dims=(0, None, None, None, None))

    @torch.inference_mode()
    def of(x, cond, sigma, noise) -> torch.Tensor:
        with _attention(device):
            return losses(params, x, cond, sigma, noise)

    return of


def train_stacked(
    cfg: DictConfig,
    data: ImageData,
    diffusion: Diffusion,
    subsets: list[torch.Tensor],
    streams: list,
    steps: int,
    checkpoint: Path | None = None,
    device: torch.device | str = "cpu",
    label: str = "lds_train",
) -> tuple[list[dict[str, torch.Tensor]], list[dict]]:
    """Train one model per subset (indices into `data`) with its own stream (init, batches
    and draws: what `seed` is to `training.train`), `steps` updates each with
    cfg.pretrain's recipe; return each model's EMA state dict, and the loss history (each
    model's mean training loss over every trainer.log_every_n_steps steps). `checkpoint`:
    where the state is saved every pretrain.checkpoint_every steps and resumed from."""
    tc = cfg.pretrain
    nets = [init_model(cfg, data, s) for s in streams]
    base = nets[0].to(device).train()
    names = [n for n, _ in base.named_parameters()]
    params = {
        n: _stack([dict(net.named_parameters())[n] for net in nets]).to(device).requires_grad_()
        for n in names
    }
    buffers = {n: b.to(device) for n, b in base.named_buffers()}  # constants, shared
    ema = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(params.values(), lr=tc.lr, weight_decay=tc.weight_decay)
    warmup = max(1, tc.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    start, history = 0, []
    recent = torch.zeros(len(streams), dtype=torch.float64)  # loss sums since the last log
    if checkpoint is not None and io.resumable(checkpoint, cfg.get("strict", False)):
        state = io.load(checkpoint)
        with torch.no_grad():
            for n in names:
                params[n].copy_(state["params"][n])
                ema[n].copy_(state["ema"][n])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, history = state["step"], state["history"]
        recent.copy_(state["recent"])
        log.info("resuming %d stacked models at step %d", len(streams), start)
    datas = [data.subset(s) for s in subsets]
    batches = [Batches(len(d), tc.batch_size, s) for d, s in zip(datas, streams, strict=True)]

    model_loss = _loss_of(base, buffers, diffusion)
    every = cfg.trainer.log_every_n_steps
    bar = Progress(steps - start, f"{label} ({len(streams)} models)", cfg.trainer.progress_bar)
    for step in range(start, steps):
        draws = [
            draw_batch(
                diffusion, d, b.indices(step), rng.generator("train", s, step),
                tc.cond_drop, tc.augment, sample_cond=True,
            )
            for d, b, s in zip(datas, batches, streams, strict=True)
        ]  # fmt: skip
        x, cond, sigma, noise, aug = (
            None if part[0] is None else _stack(list(part)).to(device)
            for part in zip(*draws, strict=True)
        )
        dims = (0, 0, None if cond is None else 0, 0, 0, None if aug is None else 0)
        with (
            rng.global_stream(torch.device(device), "dropout", streams[0], step),
            _attention(torch.device(device)),
        ):
            losses = vmap(model_loss, in_dims=dims, randomness="different")(
                params, x, cond, sigma, noise, aug
            )  # (K, B)
        per_model = losses.mean(dim=1)
        if not torch.isfinite(per_model).all():
            bad = (~torch.isfinite(per_model)).nonzero().flatten().tolist()
            raise NonFiniteLossError(f"non-finite training loss of models {bad} at step {step}")
        opt.zero_grad(set_to_none=True)
        per_model.sum().backward()  # each model's gradient is that of its own mean loss
        opt.step()
        sched.step()
        with torch.no_grad():  # AveragedModel's EMA: a copy after the first step, then lerp
            for n in names:
                if step == 0:
                    ema[n].copy_(params[n])
                else:
                    ema[n].lerp_(params[n], 1 - tc.ema_decay)
        bar.update(1)
        done = step + 1
        recent += per_model.detach().double().cpu()
        if done % every == 0:
            history.append({"step": done, "loss": (recent / every).tolist()})
            recent.zero_()
        if checkpoint is not None and (done % tc.checkpoint_every == 0 or done == steps):
            io.atomic_save(
                {"params": {n: p.detach().cpu() for n, p in params.items()},
                 "ema": {n: e.cpu() for n, e in ema.items()},
                 "opt": opt.state_dict(), "sched": sched.state_dict(), "step": done,
                 "history": history, "recent": recent.clone()},
                checkpoint,
            )  # fmt: skip
            loss = history[-1]["loss"] if history else per_model.tolist()
            log.info("%s: step %d of %d, mean training loss %.4f", label, done, steps,
                     sum(loss) / len(loss))  # fmt: skip
    bar.close()
    persistent = base.state_dict().keys()  # non-persistent buffers stay out, as in ema.pt
    states = [
        {n: (ema[n][k] if n in ema else buffers[n]).detach().cpu().clone() for n in persistent}
        for k in range(len(streams))
    ]
    return states, history
