"""LDS: each query's loss under every subset model, on one fixed bank of (level, noise)
draws shared by all of them (D-TRAK's model output, for any diffusion variant).

Bank: `lds.bank.levels` levels at the quantiles (i + 1/2) / levels of the diffusion's
training distribution of levels (DDPM: timestep i for 1,000 levels, each once, as D-TRAK;
EDM: sigma = exp(P_mean + P_std Phi^-1(u)); flow: t = sigmoid(t_mean + t_std Phi^-1(u))),
and `lds.bank.noises` noise draws per level: draw e of level i is one (m, C, H, W) tensor
for the m queries of a set from the stream ("lds-bank", seed, query set, e, i). A query's
output is its loss averaged over the bank.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import rng
from mucs_pipeline.graph import lds_queries
from mucs_pipeline.layout import Layout
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stacked import stacked_losses
from mucs_pipeline.stages import common
from mucs_pipeline.terminal import Progress
from mucs_pipeline.training import init_model


def bank_levels(cfg: DictConfig) -> torch.Tensor:
    """The bank's (levels,) noise levels."""
    count = cfg.lds.bank.levels
    return common.diffusion(cfg).training_quantile((torch.arange(count) + 0.5) / count)


def bank_noise(cfg: DictConfig, query_set: str, e: int, i: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=rng.generator("lds-bank", cfg.seed, query_set, e, i))


def model_outputs(cfg, net, states, items: dict, query_set: str, device, bar) -> torch.Tensor:
    """(K, m) bank-mean losses of the m items under K weights of `net`: the weights
    stacked once, each pass at most lds.bank.batch_size draws of all K models."""
    diffusion, levels = common.diffusion(cfg), bank_levels(cfg)
    losses_of = stacked_losses(net, diffusion, states, device)
    x, cond = items["images"], items["cond"]
    m, k, budget = len(x), len(states), cfg.lds.bank.batch_size
    per_query_pass = max(1, min(m, budget // k))  # queries per pass
    per_pass = max(1, budget // (per_query_pass * k))  # bank draws per pass
    draws = [(e, i) for e in range(cfg.lds.bank.noises) for i in range(len(levels))]
    total = torch.zeros(k, m, dtype=torch.float64)
    for start in range(0, len(draws), per_pass):
        chunk = draws[start : start + per_pass]
        noises = [bank_noise(cfg, query_set, e, i, x.shape) for e, i in chunk]
        for q in range(0, m, per_query_pass):
            part = slice(q, q + per_query_pass)
            n = len(x[part])
            losses = losses_of(
                x[part].repeat(len(chunk), 1, 1, 1).to(device),
                None if cond is None else cond[part].repeat(len(chunk), 1).to(device),
                torch.cat([levels[i].expand(n) for _, i in chunk]).to(device),
                torch.cat([noise[part] for noise in noises]).to(device),
            )  # (k, len(chunk) * n), draw-major
            total[:, part] += losses.reshape(k, len(chunk), n).sum(1).double().cpu()
        bar.update(len(chunk) * k)
    return (total / len(draws)).float()


def run(cfg: DictConfig, layout: Layout) -> dict:
    def work(unit, folder):
        data = common.dataset(cfg)
        device = common.device(cfg)
        net = init_model(cfg, data, cfg.seed).to(device)
        saved = io.load(layout.require("lds_train", unit) / "models.pt")
        c = cfg.lds
        out = {}
        for q, stage in lds_queries(layout):
            items = io.load(layout.require(stage) / "items.pt")["target"]
            bar = Progress(c.bank.levels * c.bank.noises * len(saved["ema"]),
                           f"lds_outputs {unit} {q}", cfg.trainer.progress_bar)  # fmt: skip
            out[q] = model_outputs(cfg, net, saved["ema"], items, q, device, bar)  # (K, m)
            bar.close()
        io.atomic_save(
            {"models": saved["models"], "outputs": out, "levels": bank_levels(cfg),
             "noises": c.bank.noises,
             "noise_stream": f"('lds-bank', {cfg.seed}, <query set>, e, i) -> (m, C, H, W)"},
            folder / "outputs.pt",
        )  # fmt: skip
        return {q: {"queries": o.shape[1]} for q, o in out.items()}

    return {
        u: run_unit(layout, "lds_outputs", u, lambda folder, u=u: work(u, folder))
        for u in layout.units("lds_outputs")
    }
