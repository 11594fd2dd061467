"""`plan=true`: which stage units a run would compute, resume or skip, and what they cost.

Costs are counted from the config: per-sample network forwards (a batch of b counts b)
and optimizer steps. They are upper bounds where a stop rule may end a loop early (MUCS
unlearning) and count the diffusion network only (an encoder forward of CLIP/DINO counts
one). Times are those counts multiplied by a few timed batches of the configured network
on this machine's device: seconds per sample of a forward and of a training step
(forward, backward, update). Resumed units count in full.
"""

from __future__ import annotations

import time

import torch
from omegaconf import DictConfig

from mucs_pipeline import lds_units
from mucs_pipeline.attribution.base import method_class
from mucs_pipeline.graph import STAGES
from mucs_pipeline.layout import Layout


def _generation(cfg: DictConfig, items: int, conditional: bool) -> int:
    """Second-order samplers take about two network evaluations per step; CFG doubles them."""
    guided = conditional and cfg.generate.cfg_weight != 1.0
    return items * 2 * cfg.generate.num_steps * (2 if guided else 1)


def _training(steps: int, batch_size: int, n: int) -> tuple[int, int]:
    return steps * min(batch_size, n), steps


def attribution_cost(method: DictConfig, n: int, m: int) -> tuple[int, int, int]:
    """(forwards, optimizer steps, the forwards that also run a backward pass) of
    attributing m generated items over n training items, as the method counts them (an
    ensemble's components are units of their own)."""
    return method_class(method).cost(method, n, m)


def measure(cfg: DictConfig, data, call_budget: float = 0.25) -> dict[str, float]:
    """Seconds per sample of the configured network on this machine's device: a forward
    (`forward`, at the scoring batch) and a training step (`train`: forward, backward,
    AdamW update, at pretrain.batch_size); and the batches they were timed at.

    A small network's time per sample falls with the batch (each call has fixed costs),
    a large one's does not: the batch starts at 32 and grows 4x up to the work's own
    while 4 calls stay under `call_budget` seconds, so a tiny model is timed as it runs
    and a DiT/B on a CPU costs no more than a few batches of 32."""
    from mucs_pipeline.stages import common
    from mucs_pipeline.training import init_model

    device = common.device(cfg)
    net = init_model(cfg, data, cfg.seed).to(device)
    diffusion = common.diffusion(cfg)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-12)

    def inputs(b: int) -> tuple:
        idx = torch.arange(b) % len(data)  # a batch larger than the set repeats it
        cond = None if data.cond is None else data.cond[idx].to(device)
        sigma = diffusion.training_sigma(b, gen).to(device)
        noise = torch.randn((b, *data.x.shape[1:]), generator=gen).to(device)
        return data.x[idx].to(device), cond, sigma, noise

    def timed(fn, args, reps: int = 5) -> float:
        """The fastest of `reps` calls: other jobs only ever slow a call down."""
        fn(*args), fn(*args)  # warm-up: allocation, kernels, lazy initialisation
        best = float("inf")
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn(*args)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        return best

    def per_sample(fn, target: int) -> tuple[float, int]:
        b = min(target, 32)
        while True:
            seconds = timed(fn, inputs(b))
            if b >= target or 4 * seconds > call_budget:
                return seconds / b, b
            b = min(target, 4 * b)

    def forward(x, cond, sigma, noise) -> None:
        with torch.no_grad():
            diffusion.loss(net, x, cond, sigma, noise)

    def train_step(x, cond, sigma, noise) -> None:
        opt.zero_grad()
        diffusion.loss(net, x, cond, sigma, noise).mean().backward()
        opt.step()

    score_batch = method_class(cfg.method).score_batch(cfg.method) or cfg.null_loss.batch_size
    rate, forward_batch = per_sample(forward, score_batch)
    train, train_batch = per_sample(train_step, cfg.pretrain.batch_size)
    return {"forward": rate, "train": train, "forward_batch": forward_batch,
            "train_batch": train_batch}  # fmt: skip


def unit_seconds(
    row: dict, method_cfg: DictConfig | None, n: int, m: int, rate: dict, batch_size: int
) -> float:
    """Seconds a unit takes at the measured rates (an upper bound where its count is one);
    a training unit's forwards beyond its steps' batches (F1's fit) are plain forwards."""
    if row["stage"] in ("pretrain", "retrain", "lds_train"):
        trained = row["steps"] * min(batch_size, n)
        if row["stage"] == "lds_train":  # each model on its subset
            trained = row["forwards"]
        return trained * rate["train"] + (row["forwards"] - trained) * rate["forward"]
    if row["stage"] in ("attribute", "lds_attribute") and method_cfg is not None:
        train = attribution_cost(method_cfg, n, m)[2]
        return train * rate["train"] + (row["forwards"] - train) * rate["forward"]
    return row["forwards"] * rate["forward"]


def unit_cost(
    cfg: DictConfig, layout: Layout, stage: str, method: str | None, n: int, conditional: bool
) -> tuple[int, int]:
    """(forwards, optimizer steps) of one stage unit over n training items."""
    items = cfg.generate.num_items + cfg.generate.num_controls
    fit = min(cfg.null_loss.batch_size, n) * cfg.null_loss.num_batches  # F1's fit, once
    if stage == "pretrain" and cfg.pretrain.get("init_from") is not None:
        return fit, 0  # F1 is read from a file
    if stage == "pretrain":
        forwards, steps = _training(cfg.pretrain.steps, cfg.pretrain.batch_size, n)
        return forwards + fit, steps
    if stage == "retrain":
        return _training(cfg.retrain.steps, cfg.pretrain.batch_size, n)
    if stage in ("generate", "regenerate"):
        return _generation(cfg, items, conditional), 0
    if stage == "null_loss":
        return cfg.null_loss.batch_size * cfg.null_loss.num_batches, 0
    if stage == "attribute":
        return attribution_cost(layout.method_cfg(method), n, cfg.generate.num_items)[:2]
    if stage == "lds_attribute":
        return attribution_cost(layout.method_cfg(method), n, cfg.lds.num_heldout)[:2]
    if stage == "lds_train":  # its models' steps, each over its subset's batches
        models = len(lds_units.unit_models(cfg, method))
        size = round(cfg.lds.alpha * n)
        steps = models * lds_units.steps(cfg)
        return steps * min(cfg.pretrain.batch_size, size), steps
    if stage == "lds_outputs":  # its unit's models, every query on the bank
        queries = {"generated": cfg.generate.num_items, "heldout": cfg.lds.num_heldout}
        per_model = sum(queries[q] for q in lds_units.query_sets(cfg))
        bank = cfg.lds.bank.levels * cfg.lds.bank.noises
        return len(lds_units.unit_models(cfg, method)) * per_model * bank, 0
    return 0, 0  # evaluate, lds: similarity metrics and correlations only


def unit_row(
    cfg: DictConfig,
    layout: Layout,
    stage: str,
    method: str | None,
    n: int,
    conditional: bool,
    rate: dict | None = None,
    cost: tuple[int, int] | None = None,
) -> dict:
    """One unit's row: its state, its cost (`cost`: given where the unit does other work
    than its stage's usual) and, with `rate` (from `measure`), its seconds here."""
    forwards, steps = cost or unit_cost(cfg, layout, stage, method, n, conditional)
    row = {"stage": stage, "method": method or "", "state": layout.state(stage, method),
           "forwards": forwards, "steps": steps,
           "folder": str(layout.dir(stage, method))}  # fmt: skip
    if rate is not None:
        attributes = stage in ("attribute", "lds_attribute")
        method_cfg = layout.method_cfg(method) if attributes else None
        m = cfg.lds.num_heldout if stage == "lds_attribute" else cfg.generate.num_items
        batch = cfg.pretrain.batch_size
        row["seconds"] = unit_seconds(row, method_cfg, n, m, rate, batch)
    return row


def units(
    cfg: DictConfig, layout: Layout, n: int, conditional: bool, rate: dict | None = None
) -> list[dict]:
    """The stage units of this run in execution order, with their state and cost; with
    `rate` (from `measure`), also the seconds each takes on this machine."""
    return [
        unit_row(cfg, layout, stage, method, n, conditional, rate)
        for stage in STAGES if stage in cfg.stages
        for method in layout.units(stage)
    ]  # fmt: skip


def render(rows: list[dict], rate: dict | None = None) -> str:
    from mucs_pipeline.terminal import duration

    timed = all("seconds" in r for r in rows)
    lines = [
        f"{'stage':<13} {'method':<15} {'state':<7} {'forwards':>14} {'opt. steps':>11}"
        + (f" {'time':>14}" if timed else "")
        + "  folder"
    ]
    for r in rows:
        time_cell = f" {duration(r['seconds']):>14}" if timed else ""
        lines.append(
            f"{r['stage']:<13} {r['method']:<15} {r['state']:<7} {r['forwards']:>14,} "
            f"{r['steps']:>11,}{time_cell}  {r['folder']}"
        )
    todo = [r for r in rows if r["state"] != "skip"]
    lines.append(
        f"{len(todo)} of {len(rows)} units to compute: at most "
        f"{sum(r['forwards'] for r in todo):,} forwards and {sum(r['steps'] for r in todo):,} "
        "optimizer steps (resumed units count in full)"
    )
    if timed and rate:
        total = sum(r["seconds"] for r in todo)
        lines.append(
            f"about {duration(total)} on this machine (at most, where a stop rule may end "
            f"early), at {1e3 * rate['forward']:.3g} ms per sample forward (batch "
            f"{rate['forward_batch']}) and {1e3 * rate['train']:.3g} ms per sample training "
            f"step (batch {rate['train_batch']}), timed just now"
        )
    return "\n".join(lines)
