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
from mucs_pipeline import lds_units, rng
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
    """(K, m) bank-mean losses of the m items under K weights of `net`."""
    diffusion, levels = common.diffusion(cfg), bank_levels(cfg)
    x, cond = items["images"].to(device), items["cond"]
    cond = None if cond is None else cond.to(device)
    m = len(x)
    draws = [(e, i) for e in range(cfg.lds.bank.noises) for i in range(len(levels))]
    per_pass = max(1, cfg.lds.bank.batch_size // (m * len(states)))  # draws per forward
    total = torch.zeros(len(states), m, dtype=torch.float64)
    for start in range(0, len(draws), per_pass):
        chunk = draws[start : start + per_pass]
        noise = torch.cat([bank_noise(cfg, query_set, e, i, x.shape) for e, i in chunk])
        sigma = torch.cat([levels[i].expand(m) for _, i in chunk])
        reps = len(chunk)
        losses = stacked_losses(
            net, diffusion, states, x.repeat(reps, 1, 1, 1),
            None if cond is None else cond.repeat(reps, 1), sigma.to(device), noise.to(device),
        )  # fmt: skip
        total += losses.reshape(len(states), reps, m).sum(1).double().cpu()
        bar.update(reps * len(states))
    return (total / len(draws)).float()


def run(cfg: DictConfig, layout: Layout) -> dict:
    def work(folder):
        data = common.dataset(cfg)
        device = common.device(cfg)
        net = init_model(cfg, data, cfg.seed).to(device)
        sets = {q: io.load(layout.require(stage) / "items.pt")["target"]
                for q, stage in lds_queries(layout)}  # fmt: skip
        c = cfg.lds
        out = {q: torch.full((c.num_subsets, c.replicates, len(it["images"])), float("nan"))
               for q, it in sets.items()}  # fmt: skip
        units = layout.units("lds_train")
        draws = c.bank.levels * c.bank.noises
        bar = Progress(draws * len(lds_units.models(cfg)) * len(sets), "lds_outputs",
                       cfg.trainer.progress_bar)  # fmt: skip
        for unit in units:
            saved = io.load(layout.require("lds_train", unit) / "models.pt")
            for q, items in sets.items():
                losses = model_outputs(cfg, net, saved["ema"], items, q, device, bar)
                for (s, r), row in zip(saved["models"], losses, strict=True):
                    out[q][s, r] = row
        bar.close()
        io.atomic_save(
            {"outputs": out, "levels": bank_levels(cfg), "noises": c.bank.noises,
             "noise_stream": f"('lds-bank', {cfg.seed}, <query set>, e, i) -> (m, C, H, W)"},
            folder / "outputs.pt",
        )  # fmt: skip
        return {q: {"queries": o.shape[2]} for q, o in out.items()}

    return {u: run_unit(layout, "lds_outputs", u, work) for u in layout.units("lds_outputs")}
