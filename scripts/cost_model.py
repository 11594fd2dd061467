"""Seconds per generated item of each attribution method, from per-operation timings.

Pure arithmetic (no torch): `scripts/bench_paper.py` measures the operations and the
geometry, this file counts how many of each a method performs, in the order the method's
code performs them (`mucs_pipeline/attribution/`), and tests check the counting.

Every method's cost is split into named parts; parts computed once per run (F1's loss
grid, training-set features, the Fisher, the kernel) are divided by the m generated items
that share them, as in the paper's amortised Table 6.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

METHODS = ("mucs", "dtrak", "das", "forward_inf", "abu")
# parts computed once per run and shared by the m items
SETUP_PARTS = ("f1_grid", "train_grads", "train_proj", "kernel", "weights", "fisher")
GRID_PARTS = ("f1_grid", "score")  # loss grids that trainer.bf16_scoring runs in bfloat16


@dataclass(frozen=True)
class Ops:
    """Measured seconds of each operation, on one device, for one network shape."""

    forward: float  # (a) loss evaluation per sample, scoring batch shape, inference mode
    unlearn: float  # (b) forward + backward per sample, only the unlearned (MLP) weights trainable
    unlearn_update: float  # one AdamW update of those weights
    dtrak_draw: float  # (c) D-TRAK's per-sample gradient: per (item, draw) ...
    dtrak_item: float  # ... plus per item (the item's flattened gradient)
    das_draw: float  # DAS's per-draw normalised gradients: per (item, draw) ...
    das_item: float  # ... plus per item
    proj_block: float  # (d) TRAK projector, per block and shard: generating the block ...
    proj_block_grad: float  # ... plus multiplying one gradient of the shard by it
    kernel_flops: float  # float64 FLOP/s of the TRAK kernel's matmul and Cholesky


@dataclass(frozen=True)
class Geometry:
    """What the counts depend on besides the method config."""

    n: int  # |Z|, training items
    m: int = 20  # generated items sharing the per-run setup
    k: int | None = None  # generated items per prepare() call (their features); None: m
    unlearn_steps: float = 109  # MUCS unlearning steps per item
    proj_blocks: int = 1  # blocks of the projector (regenerated for every shard when > 1)
    per_shard: int = 1  # training items per projected shard (`DTRAK.shard_items`)


def feature_shards(items: int, per_shard: int, chunk: int) -> list[int]:
    """Shard sizes of `DTRAK.features` on `items` items: gradients arrive `chunk` items at a
    time and are projected once a shard holds at least `per_shard` of them."""
    shards, pending = [], 0
    for start in range(0, items, chunk):
        pending += min(chunk, items - start)
        if pending >= per_shard:
            shards.append(pending)
            pending = 0
    return shards + ([pending] if pending else [])


def training_shards(n: int, per_shard: int, chunk: int) -> Counter:
    """{shard size: count} of `DTRAK.training_features`: slices of `per_shard` items, each
    projected through `features`."""
    counts: Counter = Counter()
    full, rest = divmod(n, per_shard)
    for size, times in ((per_shard, full), (rest, 1)):
        if size and times:
            for shard in feature_shards(size, per_shard, chunk):
                counts[shard] += times
    return counts


def projection(ops: Ops, geo: Geometry, shards: Mapping[int, int]) -> float:
    """Seconds of projecting shards {size: count}: each block is generated once per shard
    (once in all when the projector has a single block) and multiplies every gradient."""
    grads = sum(size * count for size, count in shards.items())
    generations = sum(shards.values()) if geo.proj_blocks > 1 else 0
    return geo.proj_blocks * (generations * ops.proj_block + grads * ops.proj_block_grad)


def kernel_flops(n: int, dim: int) -> tuple[float, float]:
    """(factorisation, one solve) FLOPs of `kernel_solver` with n items of dim features."""
    if n < dim:  # Gram matrix Phi Phi^T, its Cholesky; per item Phi phi_hat and two triangles
        return 2.0 * n * n * dim + n**3 / 3, 2.0 * n * dim + 2.0 * n * n
    return 2.0 * dim * dim * n + dim**3 / 3, 2.0 * dim * dim + 2.0 * n * dim


def seconds_per_item(cfg: Mapping, ops: Ops, geo: Geometry) -> dict[str, float]:
    """Seconds per generated item of the method `cfg` (a method config), by part."""
    kind = cfg.get("kind", cfg["name"])
    n, m = geo.n, geo.m
    if kind == "mucs":
        grid = n * cfg["num_noises"] * ops.forward  # F1 once per run, F2 once per item
        per_step = (cfg["batch_size"] + cfg["ga_draws"]) * ops.unlearn + ops.unlearn_update
        return {"f1_grid": grid / m, "unlearn": geo.unlearn_steps * per_step, "score": grid}
    if kind in ("dtrak", "das"):
        j, chunk = cfg["num_noises"], cfg["chunk"]
        draw, item = (ops.dtrak_draw, ops.dtrak_item) if kind == "dtrak" else (
            ops.das_draw, ops.das_item)  # fmt: skip
        k = geo.k or m
        dim = cfg["proj_dim"]
        setup, solve = kernel_flops(n, dim)
        parts = {
            "train_grads": n * (j * draw + item) / m,
            "train_proj": projection(ops, geo, training_shards(n, geo.per_shard, chunk)) / m,
            "kernel": setup / ops.kernel_flops / m,
            "item_grads": j * draw + item,
            "item_proj": projection(ops, geo, Counter(feature_shards(k, geo.per_shard, chunk))) / k,
            "solve": solve / ops.kernel_flops,
        }
        if kind == "das":  # r_i: F1's losses on the J draws, a loss grid of n x J
            parts["weights"] = n * j * ops.forward / m
        return parts
    if kind in ("forward_inf", "abu"):
        # The ascent's few steps of ga_draws forward + backward: timed with the MLP-only
        # backward of unlearning (they update every weight; their share is below 0.1%).
        grid = n * cfg["num_noises"] * ops.forward
        parts = {"f1_grid": grid / m, "ascent": cfg["steps"] * cfg["ga_draws"] * ops.unlearn}
        if kind == "abu":  # diagonal Fisher: one per-sample loss gradient per item and epoch
            parts["fisher"] = n * cfg["fisher_epochs"] * (ops.dtrak_draw + ops.dtrak_item) / m
        parts["score"] = grid
        return parts
    raise ValueError(f"method {kind!r}: the cost model covers {', '.join(METHODS)}")


def minutes(parts: Mapping[str, float]) -> float:
    return sum(parts.values()) / 60


def setup_seconds(parts: Mapping[str, float], m: int) -> float:
    """Seconds of the once-per-run parts in all (undoing the division by m)."""
    return m * sum(v for k, v in parts.items() if k in SETUP_PARTS)


def scaled(parts: Mapping[str, float], factor: float, scoring_factor: float | None = None):
    """Parts on another device whose ops run `factor` times faster (loss-grid parts at
    `scoring_factor` when scoring has its own precision, e.g. bfloat16)."""
    return {
        k: v / (scoring_factor if scoring_factor and k in GRID_PARTS else factor)
        for k, v in parts.items()
    }
