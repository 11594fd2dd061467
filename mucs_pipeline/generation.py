"""Generated items: seeds, conditions, and sampling with one RNG per seed."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from mucs_pipeline import rng
from mucs_pipeline.data import ImageData
from mucs_pipeline.models import Diffusion

# Item seeds are seed x 100,000 plus less than 150,000 (the tune split's offset, the item):
# the largest run seed whose item seeds fit the int64 that seeds a torch generator.
MAX_SEED = (2**63 - 1 - 150_000) // 100_000


def item_plan(cfg: DictConfig, data: ImageData) -> dict[str, dict]:
    """Seeds and conditions of the m attributed items and the control items of run `cfg.seed`.

    Class-conditional items cycle through the classes so that every class is represented;
    items of data with generation conditions (COCO's test captions) take a seeded random
    draw of them, and `labels` holds the index of the condition drawn.

    `generate.split=tune` gives items for choosing baseline hyperparameters: other seeds
    (offset 50,000) and, for generation conditions, the other end of the same random
    order, so that no tuning item coincides with an evaluated one.
    """
    m, n_ctrl = cfg.generate.num_items, cfg.generate.num_controls
    split = cfg.generate.get("split", "eval")
    if split not in ("eval", "tune"):
        raise ValueError(f"generate.split={split!r}: expected 'eval' or 'tune'")
    if max(m, n_ctrl) >= 50_000:
        raise ValueError(f"generate.num_items={m}: at most 49,999 items per split")
    base = cfg.seed * 100_000 + (50_000 if split == "tune" else 0)
    order = None
    if data.gen_cond is not None:
        needed = (2 if split == "tune" else 1) * (m + n_ctrl)  # tune: disjoint from eval
        if len(data.gen_cond) < needed:
            raise ValueError(
                f"{m + n_ctrl} generated items of split {split!r} need {needed} generation "
                f"conditions; the data has {len(data.gen_cond)}"
            )
        order = torch.randperm(len(data.gen_cond), generator=rng.generator("gen-cond", cfg.seed))
        if split == "tune":
            order = order.flip(0)
    plan = {}
    for subset, offset, count in (("target", 0, m), ("control", m, n_ctrl)):
        seeds = torch.arange(base + offset, base + offset + count)
        labels, cond = None, None
        if order is not None:
            labels = order[offset : offset + count]
            cond = data.gen_cond[labels]
        elif data.conditional:
            first = offset + (1 if split == "tune" else 0)  # tuning items start one class later
            labels = torch.arange(first, first + count) % data.cond_dim
            cond = (
                torch.stack([data.condition_for_label(int(c)) for c in labels]) if count else None
            )
        plan[subset] = {"seeds": seeds, "labels": labels, "cond": cond}
    if cfg.generate.get("captions") is not None and split == "eval":  # prompt mode
        from mucs_pipeline.prompts import embed_prompts

        captions = list(cfg.generate.captions)
        plan["target"].update(labels=None, cond=embed_prompts(cfg), captions=captions)
    return plan


def latents_for(seeds: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Unit-variance starting noise, one generator per seed, so items do not depend on batching."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    )


@torch.no_grad()
def generate(
    net: torch.nn.Module,
    diffusion: Diffusion,
    seeds: torch.Tensor,
    cond: torch.Tensor | None,
    shape: tuple[int, ...],
    cfg: DictConfig,
    device: torch.device,
    desc: str = "generate",
) -> torch.Tensor:
    """Sample one image per seed with the deterministic Heun sampler; (N, C, H, W) in [-1, 1]."""
    net = net.to(device).eval()
    out = []
    chunks = range(0, len(seeds), cfg.batch_size)
    for start in tqdm(chunks, desc=desc, disable=len(chunks) < 2, leave=False):
        sl = slice(start, start + cfg.batch_size)
        latents = latents_for(seeds[sl], shape).to(device)
        c = None if cond is None else cond[sl].to(device)
        x = diffusion.sample(net, latents, c, cfg.num_steps, cfg.cfg_weight)
        out.append(x.clamp(-1, 1).cpu())
    return torch.cat(out) if out else torch.empty(0, *shape)
