"""`plan=true`: which stage units a run would compute, resume or skip, and what they cost.

Costs are counted, not timed: per-sample network forwards (a batch of b counts b) and
optimizer steps, from the config alone. They are upper bounds where a stop rule may end
a loop early (MUCS unlearning) and count the diffusion network only (an encoder forward
of CLIP/DINO counts one).
"""

from __future__ import annotations

from omegaconf import DictConfig

from mucs_pipeline.layout import STAGES, Layout


def _generation(cfg: DictConfig, items: int, conditional: bool) -> int:
    """Second-order samplers take about two network evaluations per step; CFG doubles them."""
    guided = conditional and cfg.generate.cfg_weight != 1.0
    return items * 2 * cfg.generate.num_steps * (2 if guided else 1)


def _training(steps: int, batch_size: int, n: int) -> tuple[int, int]:
    return steps * min(batch_size, n), steps


def attribution_cost(method: DictConfig, n: int, m: int) -> tuple[int, int]:
    """(forwards, optimizer steps) of attributing m generated items over n training items."""
    kind = method.get("kind", method.name)
    score = (m + 1) * n * method.get("num_noises", 0)  # F2 of every item, plus F1 once
    if kind == "mucs":
        per_step = method.batch_size + method.ga_draws  # L_FT batch and the item's draws
        return m * method.max_steps * per_step + score, m * method.max_steps
    if kind in ("dtrak", "das"):  # one forward and backward per (item, draw), both sets
        return (n + m) * method.num_noises, 0
    if kind == "forward_inf":
        return m * method.steps * method.ga_draws + score, m * method.steps
    if kind == "abu":
        fisher = n * method.fisher_epochs
        return fisher + m * method.steps * method.ga_draws + score, m * method.steps
    if kind in ("clip", "dino"):
        return n + m, 0  # one encoder forward per image
    return 0, 0  # random, pixel, condition, ensemble (its components are their own units)


def unit_cost(
    cfg: DictConfig, layout: Layout, stage: str, method: str | None, n: int, conditional: bool
) -> tuple[int, int]:
    """(forwards, optimizer steps) of one stage unit over n training items."""
    items = cfg.generate.num_items + cfg.generate.num_controls
    if stage in ("pretrain", "retrain"):
        steps = cfg.pretrain.steps if stage == "pretrain" else cfg.retrain.steps
        return _training(steps, cfg.pretrain.batch_size, n)
    if stage in ("generate", "regenerate"):
        return _generation(cfg, items, conditional), 0
    if stage == "null_loss":
        return cfg.null_loss.batch_size * cfg.null_loss.num_batches, 0
    if stage == "attribute":
        return attribution_cost(layout.method_cfg(method), n, cfg.generate.num_items)
    return 0, 0  # evaluate: similarity metrics only


def units(cfg: DictConfig, layout: Layout, n: int, conditional: bool) -> list[dict]:
    """The stage units of this run in execution order, with their state and cost."""
    rows = []
    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        for method in layout.units(stage):
            forwards, steps = unit_cost(cfg, layout, stage, method, n, conditional)
            rows.append(
                {"stage": stage, "method": method or "", "state": layout.state(stage, method),
                 "forwards": forwards, "steps": steps, "folder": str(layout.dir(stage, method))}
            )  # fmt: skip
    return rows


def render(rows: list[dict]) -> str:
    lines = [
        f"{'stage':<11} {'method':<12} {'state':<7} {'forwards':>14} {'opt. steps':>11}  folder"
    ]
    for r in rows:
        lines.append(
            f"{r['stage']:<11} {r['method']:<12} {r['state']:<7} {r['forwards']:>14,} "
            f"{r['steps']:>11,}  {r['folder']}"
        )
    todo = [r for r in rows if r["state"] != "skip"]
    lines.append(
        f"{len(todo)} of {len(rows)} units to compute: at most "
        f"{sum(r['forwards'] for r in todo):,} forwards and {sum(r['steps'] for r in todo):,} "
        "optimizer steps (resumed units count in full)"
    )
    return "\n".join(lines)
