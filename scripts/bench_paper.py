"""`make bench-paper`: minutes per generated item at the paper's scale, from measured timings.

For DiT/B in the CIFAR10, ArtBench10 and COCO shapes (the `<dataset>_mucs` experiments),
this measures on this machine the time per sample of: (a) a scoring forward (inference
mode), (b) a forward + backward of unlearning (only the MLP weights trainable) and its
AdamW update, (c) the per-sample gradients of D-TRAK and DAS (`PerSampleGradients`, every
weight), (d) the TRAK projection of gradients to 16,384 dimensions with the project's
projector (`Projector`, TRAK's BasicProjector), and the float64 rate of the TRAK kernel.
`scripts/cost_model.py` multiplies them by each method's operation counts at the paper's
settings (|Z| the training split, |N| = 100, 100 gradient draws, m = 20, 109 unlearning
steps) and the minutes are scaled to an H100 by the ratio of matmul peaks.

`--unet` measures the UNet setups instead (the release's DDPM++ on CIFAR10, diffusers'
UNet2DModel in D-TRAK's CIFAR-2 and CIFAR-10 setups) for MUCS, D-TRAK and DAS, into its own
section of docs/benchmarks.md and `unet_*` keys; `make bench-paper` runs both.

The same measurement on the digits `dit_tiny` setup predicts what a method costs per item
there, and the method is then run for real on that setup (`--validate`), so the model is
checked against a measurement it could get wrong. Results are written into
docs/benchmarks.md (its "Paper scale" section) and docs/benchmarks.json (`paper_*` keys),
keeping what `make bench` wrote. Nothing is asserted; a prediction off by more than 30%
says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
from bench import ROOT, SECTION, config, machine, matmul_flops, replace_section, timings
from cost_model import METHODS, Geometry, Ops, minutes, scaled, seconds_per_item, setup_seconds

from mucs_pipeline.attribution import Context, build_method
from mucs_pipeline.attribution.base import select_parameters
from mucs_pipeline.attribution.dtrak import DAS, DTRAK
from mucs_pipeline.attribution.gradients import PerSampleGradients, Projector
from mucs_pipeline.data import build_dataset
from mucs_pipeline.models import build_diffusion, build_model
from mucs_pipeline.stages.null_loss import estimate_loss_null

log = logging.getLogger("bench_paper")

# dataset -> (|Z|: the training split the loader reads, condition width the data feeds)
PAPER_SETUPS = {
    "cifar10": (50_000, 0),  # data_batch_1..5 of 10,000; unconditional
    "artbench10": (50_000, 10),  # 5,000 train images per style; one-hot style id
    "coco": (118_287, 768),  # train2017 images with captions; CLIP-Text ViT-L-14 embeddings
}
# UNet setup -> (its MUCS experiment, |Z|, condition width); methods are set on top of it
UNET_SETUPS = {
    "cifar10_unet": ("cifar10_mucs_unet", 50_000, 0),  # the release's DDPM++, EDM
    "cifar2": ("cifar2_mucs", 5_000, 0),  # D-TRAK's CIFAR-2: UNet2DModel, DDPM
    "cifar10_ddpm": ("cifar10_ddpm_mucs", 50_000, 0),  # D-TRAK's CIFAR-10
}
UNET_METHODS = ("mucs", "dtrak", "das")
UNET_SECTION = ("<!-- bench-paper-unet: written by scripts/bench_paper.py --unet -->",
                "<!-- /bench-paper-unet -->")  # fmt: skip
# Table 6 of the paper: amortised minutes per generated item on one H100 (80 GB).
PAPER_TABLE6 = {
    "mucs": (22.8, 24.2, 56.5),
    "dtrak": (57.4, 36.0, 101.1),
    "das": (66.7, 40.8, 113.9),
    "forward_inf": (34.3, 36.1, 82.8),
    "abu": (36.4, 38.1, 87.9),
}
# NVIDIA H100 SXM5 datasheet, dense (without sparsity): FP32 67 TFLOP/s, BF16 989 TFLOP/s.
H100_FLOPS = {"fp32": 67e12, "bf16": 989e12}
UNLEARN_STEPS = 109  # the paper's mean MUCS unlearning steps (Table 2, U-C3, COCO)
NAMES = {"mucs": "MUCS", "dtrak": "D-TRAK", "das": "DAS", "forward_inf": "Forward-INF",
         "abu": "AbU"}  # fmt: skip
# --smoke: a small network and projection, to check the script quickly (not its numbers)
SMOKE_MODEL = ["model.hidden=64", "model.depth=2", "model.heads=2", "model.registers=4"]
SMOKE_METHOD = ["++method.proj_dim=512", "++method.shard_items=16"]


@dataclass(frozen=True)
class Plan:
    """Batch shapes of the measurements: the real ones where they are cheap."""

    forward_batch: int  # samples per timed scoring forward
    unlearn_batch: int  # samples per timed unlearning forward + backward
    chunk: int | None  # items per vmapped gradient batch (None: the method's `chunk`)
    draws: dict  # method -> two draw counts J; their difference separates per-draw cost
    proj_blocks: int  # projector blocks timed (the cost is linear in the blocks)
    repeats: int  # timed calls; their minimum and mean are kept
    warmup: bool  # an untimed call first (on a CPU, DiT/B calls are slow enough to skip it)
    clock: Callable[[], float] = time.perf_counter  # wall time, or this process's CPU time


# On a CPU every measurement runs on one thread and counts this process's CPU time: other
# jobs on a shared machine stretch wall times by 2-4x, in bursts, but not CPU time. DiT/B
# takes seconds per sample there, hence tiny batches, one item per gradient call and one
# or two draws (their difference still separates the per-draw from the per-call cost).
CPU_PAPER = Plan(4, 2, 1, {"dtrak": (1, 2), "das": (1, 2)}, 2, 2, False, time.process_time)
GPU_PAPER = Plan(512, 200, 2, {"dtrak": (25, 50), "das": (5, 10)}, 16, 3, warmup=True)
TINY = Plan(2000, 100, None, {"dtrak": (25, 50), "das": (25, 50)}, 2, 3, True, time.process_time)
SMOKE = Plan(50, 10, None, {"dtrak": (1, 2), "das": (1, 2)}, 1, 1, True, time.process_time)


def inputs(diffusion, shape, cond_dim: int, b: int, device, seed: int = 0):
    """Random images, conditions, training-distribution sigmas and noises for b samples."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((b, *shape), generator=gen) * 2 - 1
    cond = torch.rand((b, cond_dim), generator=gen) if cond_dim else None
    sigma = diffusion.training_sigma(b, gen).float()
    noise = torch.randn((b, *shape), generator=gen)
    return tuple(None if t is None else t.to(device) for t in (x, cond, sigma, noise))


def forward_op(net, diffusion, shape, cond_dim, plan: Plan, device, bf16=False) -> list[float]:
    """(a) Seconds per sample of the scoring loss, inference mode (bf16: under autocast)."""
    args = inputs(diffusion, shape, cond_dim, plan.forward_batch, device)

    def run():
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            diffusion.loss(net, *args)

    return [t / plan.forward_batch for t in timings(run, plan.repeats, plan.warmup, plan.clock)]


def unlearn_op(net, diffusion, shape, cond_dim, mucs, pretrain, plan: Plan, device):
    """(b) Seconds per sample of forward + backward with only the unlearned weights
    trainable, and seconds of one AdamW update of them (`Unlearning.configure_optimizers`)."""
    names = set(select_parameters(net, list(mucs.params)))
    params = [p for n, p in net.named_parameters() if n in names]
    for n, p in net.named_parameters():
        p.requires_grad_(n in names)
    args = inputs(diffusion, shape, cond_dim, plan.unlearn_batch, device)

    def step():
        net.zero_grad(set_to_none=True)
        diffusion.loss(net, *args).mean().backward()

    per_sample = [
        t / plan.unlearn_batch for t in timings(step, plan.repeats, plan.warmup, plan.clock)
    ]
    opt = torch.optim.AdamW(
        params, lr=pretrain.lr * mucs.lr_scale, weight_decay=pretrain.weight_decay
    )
    update = timings(opt.step, plan.repeats, plan.warmup, plan.clock)
    net.zero_grad(set_to_none=True)
    for p in net.parameters():
        p.requires_grad_(True)
    return per_sample, update


def gradient_op(kind, grads, diffusion, shape, cond_dim, chunk, draws, plan, device):
    """(c) Seconds of a method's per-sample gradients of `chunk` items: {J: call times} for
    the two draw counts J of the plan."""
    holder = SimpleNamespace(ctx=SimpleNamespace(diffusion=diffusion))  # all they read
    x, cond, _, _ = inputs(diffusion, shape, cond_dim, chunk, device)
    if kind == "dtrak":
        call = partial(grads, partial(DTRAK.objective, holder))
    else:
        call = partial(grads.normalized_mean, partial(DAS.objective, holder))
    out = {}
    for j in draws:
        _, _, sigma, noise = inputs(diffusion, shape, 0, j, device, seed=1)

        def run(sigma=sigma, noise=noise):
            for g in call(x, cond, sigma, noise, chunk):
                g.sum().item()  # wait for the device

        out[j] = timings(run, plan.repeats, plan.warmup, plan.clock)
    return out


def fit_gradient(times: dict, chunk: int, stat) -> tuple[float, float]:
    """(per (item, draw), per item) from the call times at two draw counts: the per-item
    part is each call's fixed cost (tracing, the flattened gradient) over its items."""
    (j1, t1), (j2, t2) = ((j, stat(t)) for j, t in times.items())
    per_draw = (t2 - t1) / (chunk * (j2 - j1))
    per_item = t1 / chunk - j1 * per_draw
    if per_draw <= 0 or per_item < 0:  # timing noise larger than one of the two parts
        per_draw, per_item = t2 / (chunk * j2), 0.0
    return per_draw, per_item


def projection_op(dim: int, method, plan: Plan, shard: int, device) -> tuple[dict, int]:
    """(d) The project's projector at this gradient size, timed on `plan.proj_blocks` of its
    blocks: ({shard size: seconds per block}, for 1 and `shard` gradients; blocks)."""
    proj = Projector(dim, method.proj_dim, 0, method.proj_type, device)
    basic = proj.proj
    blocks = basic.num_blocks
    timed_blocks = min(blocks, plan.proj_blocks)
    basic.num_blocks = timed_blocks  # the same loop over fewer blocks
    out = {}
    for s in (1, max(2, shard)):
        g = torch.full((s, dim), 1e-3, device=device)
        out[s] = [
            t / timed_blocks
            for t in timings(
                lambda g=g: proj(g).sum().item(), plan.repeats, plan.warmup, plan.clock
            )
        ]
        del g
    basic.num_blocks = blocks
    return out, blocks


def fit_projection(times: dict, blocks: int, stat) -> tuple[float, float]:
    """(per block and shard: generating it, per block and gradient: multiplying by it)."""
    (s1, t1), (s2, t2) = ((s, stat(t)) for s, t in times.items())
    if blocks == 1:  # a single block is generated once, at construction
        return 0.0, t2 / s2
    per_grad = max(0.0, (t2 - t1) / (s2 - s1))
    return max(0.0, t1 - per_grad), per_grad


def per_shard(method, dim: int) -> int:
    """`DTRAK.shard_items` for this method config and gradient size."""
    return DTRAK.shard_items(SimpleNamespace(cfg=method, grads=SimpleNamespace(dim=dim)))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def measure(name, net, diffusion, shape, cond_dim, cfgs, plan: Plan, device, n: int):
    """Every op for one network shape: ({"best": Ops, "mean": Ops}, {method: Geometry}, info).

    "best" (the minimum over repeats) drives the projections; "mean" predicts the real
    runs of the tiny-model check, which average over whatever else the machine runs."""
    net = net.to(device).eval()
    start = time.perf_counter()
    fwd = forward_op(net, diffusion, shape, cond_dim, plan, device)
    unlearn, update = unlearn_op(
        net, diffusion, shape, cond_dim, cfgs["mucs"].method, cfgs["mucs"].pretrain, plan, device
    )
    grads = PerSampleGradients(net, list(cfgs["dtrak"].method.params), device)
    grad_times = {}
    for kind in ("dtrak", "das"):
        chunk = plan.chunk or cfgs[kind].method.chunk
        grad_times[kind] = (
            chunk,
            gradient_op(
                kind, grads, diffusion, shape, cond_dim, chunk, plan.draws[kind], plan, device
            ),
        )
    shards = {k: per_shard(cfgs[k].method, grads.dim) for k in ("dtrak", "das")}
    biggest = max(min(n, s) for s in shards.values())
    proj_times, blocks = projection_op(grads.dim, cfgs["dtrak"].method, plan, biggest, device)
    kernel_rate = matmul_flops(device, torch.float64, plan.clock)
    ops = {}
    for label, stat in (("best", min), ("mean", mean)):
        dtrak, das = (
            fit_gradient(grad_times[k][1], grad_times[k][0], stat) for k in ("dtrak", "das")
        )
        proj = fit_projection(proj_times, blocks, stat)
        ops[label] = Ops(
            forward=stat(fwd), unlearn=stat(unlearn), unlearn_update=stat(update),
            dtrak_draw=dtrak[0], dtrak_item=dtrak[1], das_draw=das[0], das_item=das[1],
            proj_block=proj[0], proj_block_grad=proj[1], kernel_flops=kernel_rate,
        )  # fmt: skip
    info = {
        "params": sum(p.numel() for p in net.parameters()),
        "grad_dim": grads.dim,
        "proj_blocks": blocks,
        "per_shard": shards,
        "bf16_forward": min(forward_op(net, diffusion, shape, cond_dim, plan, device, bf16=True))
        if device.type == "cuda"
        else None,
        "measure_seconds": time.perf_counter() - start,
    }
    log.info("%s: %s (%.0f s)", name, ops["best"], info["measure_seconds"])
    geos = {k: Geometry(n=n, proj_blocks=blocks, per_shard=shards.get(k, 1)) for k in METHODS}
    return ops, geos, info


def paper_section(args, device) -> dict:
    """Per-op timings and projected minutes per item for the three DiT/B shapes."""
    out = {}
    for dataset in args.datasets:
        n, cond_dim = PAPER_SETUPS[dataset]
        extra = SMOKE_MODEL + SMOKE_METHOD if args.smoke else []
        cfgs = {m: config(f"+experiment={dataset}_{m}", *extra) for m in METHODS}
        plan = GPU_PAPER if device.type == "cuda" else SMOKE if args.smoke else CPU_PAPER
        ops, info, parts = project(dataset, cfgs, n, cond_dim, plan, device, args, METHODS)
        out[dataset] = {
            "n": n, "ops": asdict(ops["best"]), "ops_mean": asdict(ops["mean"]), "info": info,
            "parts": parts,
        }  # fmt: skip
    return out


def project(name, cfgs, n: int, cond_dim: int, plan: Plan, device, args, methods):
    """Measure the ops of the setup `cfgs` describes: (ops, info, {method: seconds by part})."""
    cfg = cfgs["mucs"]
    shape = (cfg.dataset.channels, cfg.dataset.resolution, cfg.dataset.resolution)
    net = build_model(cfg.model, shape[-1], shape[0], cond_dim, diffusion=cfg.diffusion)
    diffusion = build_diffusion(cfg.diffusion)
    ops, geos, info = measure(name, net, diffusion, shape, cond_dim, cfgs, plan, device, n)
    del net
    steps = args.unlearn_steps
    parts = {
        m: seconds_per_item(cfgs[m].method, ops["best"], replace(geos[m], unlearn_steps=steps))
        for m in methods
    }
    return ops, info, parts


def unet_section(args, device) -> dict:
    """Per-op timings and projected minutes per item for the UNet setups (UNET_SETUPS)."""
    out = {}
    for setup, (experiment, n, cond_dim) in UNET_SETUPS.items():
        cfgs = {m: config(f"+experiment={experiment}", f"method={m}") for m in METHODS}
        plan = GPU_PAPER if device.type == "cuda" else CPU_PAPER
        ops, info, parts = project(setup, cfgs, n, cond_dim, plan, device, args, UNET_METHODS)
        cfg = cfgs["mucs"]
        info.update(model=cfg.model.name, diffusion=cfg.diffusion.name, experiment=experiment)
        out[setup] = {"n": n, "ops": asdict(ops["best"]), "info": info, "parts": parts}
    return out


def unet_report(results: dict, device, info: dict, unlearn_steps: float) -> tuple[list, dict]:
    """The UNet section of benchmarks.md and its JSON keys."""
    gpu, peak = device.type == "cuda", results["matmul_flops"]
    where = info.get("gpu", "") if gpu else f"this CPU ({info['cpu']}, {info['cores']} cores)"
    factor = 1.0 if gpu else H100_FLOPS["fp32"] / peak
    column = "this GPU" if gpu else "H100 (one-core time x peak ratio)"
    md = [
        "## UNet setups: projected cost (issue 35)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `{results['command']}` on {where}, in "
        f"{results['seconds'] / 60:.1f} min, as the DiT/B section above (the same ops, "
        f"operation counts and H100 scaling; MUCS at {unlearn_steps:g} unlearning steps, "
        "every weight but the biases unlearned on a UNet). The UNets' time per sample and "
        "gradient size replace DiT/B's; the paper has no UNet numbers to set beside them.",
        "",
        "| setup | network | params | forward | D-TRAK grad / draw | "
        + " | ".join(f"{NAMES[m]} min / item" for m in UNET_METHODS)
        + " | MUCS vs D-TRAK / DAS |",
        "|---|---|---|---|---|" + "---|" * len(UNET_METHODS) + "---|",
    ]
    keys: dict = {}
    for setup, r in results["unet"].items():
        i, ops = r["info"], r["ops"]
        mins = {m: minutes(scaled(r["parts"][m], factor, None)) for m in UNET_METHODS}
        md.append(
            f"| {setup} ({r['n']:,} items; `+experiment={i['experiment']}`) "
            f"| {i['model']}, {i['diffusion']} | {i['params'] / 1e6:.1f}M "
            f"| {ops['forward']:.3g} s | {ops['dtrak_draw']:.3g} s | "
            + " | ".join(f"{mins[m]:,.1f}" for m in UNET_METHODS)
            + f" | {mins['dtrak'] / mins['mucs']:.2f} / {mins['das'] / mins['mucs']:.2f} |"
        )
        keys[f"unet_{setup}"] = {"ops": ops, "info": i, "minutes_per_item": mins,
                                 "column": column}  # fmt: skip
    md += [
        "",
        f"Minutes per item: the {column} column of the DiT/B section, float32. Forward and "
        "gradient times are " + ("wall time" if gpu else "one thread's CPU time") + " per sample.",
    ]
    return md, keys


def perturbed_tiny(cfg, data):
    """The digits DiT, randomly initialised, every weight moved off its init (zero-initialised
    layers included) so that the output and every gradient depend on the input."""
    net = build_model(cfg.model, data.x.shape[-1], data.x.shape[1], data.cond_dim)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return net.eval()


def run_method(method, cfg, data, diffusion, net, loss_null, k: int, device, tmp: Path, clock):
    """Real seconds of `clock`: (setup, per item, unlearning per item) of `method` on k items."""
    ctx = Context(
        cfg=cfg, data=data, diffusion=diffusion, net=net, loss_null=loss_null,
        device=device, cache_dir=tmp / method,
    )  # fmt: skip
    start = clock()
    scorer = build_method(cfg.method, ctx)
    setup = clock() - start
    unlearning = []
    if method == "mucs":  # time the unlearning inside score() too
        inner = scorer.unlearn

        def timed_unlearn(*a):
            t = clock()
            out = inner(*a)
            unlearning.append(clock() - t)
            return out

        scorer.unlearn = timed_unlearn
    images = data.x[:k]
    conds = None if data.cond is None else data.cond[:k]
    start = clock()
    scorer.prepare(images, conds)
    for i in range(k):
        scorer.score(i, images[i], None if conds is None else conds[i : i + 1])
    per_item = (clock() - start) / k
    return setup, per_item, sum(unlearning) / k if unlearning else None


def validation(args) -> dict:
    """The model's seconds per item on the digits tiny DiT against a real run of each method,
    both on the CPU, on one thread, in this process's CPU time (as CPU_PAPER)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _validation(args, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)


def _validation(args, device) -> dict:
    plan = SMOKE if args.smoke else TINY
    base = [f"dataset.subset={args.val_train_items}", *(SMOKE_METHOD if args.smoke else [])]
    steps = [f"method.max_steps={args.val_steps}", "method.stop_rule=false"]
    cfgs = {m: config(*base, f"method={m}", *(steps if m == "mucs" else [])) for m in METHODS}
    cfg = cfgs["mucs"]
    data = build_dataset(cfg.dataset)
    diffusion = build_diffusion(cfg.diffusion)
    net = perturbed_tiny(cfg, data)
    shape = tuple(data.x.shape[1:])
    ops, geos, info = measure(
        "digits", net, diffusion, shape, data.cond_dim, cfgs, plan, device, len(data)
    )
    loss_null = estimate_loss_null(cfg, data, diffusion)
    k, m = args.val_items, cfg.generate.num_items
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.validate:
            geo = replace(geos[method], m=m, k=k, unlearn_steps=args.val_steps)
            parts = seconds_per_item(cfgs[method].method, ops["mean"], geo)
            best = minutes(seconds_per_item(cfgs[method].method, ops["best"], geo)) * 60
            log.info("validating %s on %d digits items", method, len(data))
            setup, per_item, unlearning = run_method(
                method,
                cfgs[method],
                data,
                diffusion,
                net,
                loss_null,
                k,
                device,
                Path(tmp),
                plan.clock,
            )
            predicted = minutes(parts) * 60
            measured = setup / m + per_item
            rows[method] = {
                "predicted_s": predicted,
                "measured_s": measured,
                "ratio": predicted / measured,
                "predicted_setup_s": setup_seconds(parts, m),
                "measured_setup_s": setup,
                "predicted_item_s": predicted - setup_seconds(parts, m) / m,
                "measured_item_s": per_item,
                "predicted_unlearn_s": parts.get("unlearn"),
                "measured_unlearn_s": unlearning,
                "predicted_from_best_s": best,
            }
            log.info("%s: predicted %.1f s, measured %.1f s", method, predicted, measured)
    return {"ops": asdict(ops["best"]), "ops_mean": asdict(ops["mean"]), "info": info,
            "n": len(data), "m": m, "k": k, "steps": args.val_steps, "methods": rows}  # fmt: skip


def fmt_s(s: float) -> str:
    """Seconds as a short human duration."""
    if s >= 3600:
        return f"{s / 3600:,.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.3g} s"


def variants(results: dict, dataset: str, gpu: bool) -> dict[str, tuple[float, float | None]]:
    """Column name -> (speed factor of every op, of the loss grids) against the measurement."""
    peak = results["matmul_flops"]
    if gpu:
        info = results["paper"][dataset]["info"]
        bf16 = results["paper"][dataset]["ops"]["forward"] / info["bf16_forward"]
        return {"this GPU": (1.0, None), "this GPU, bf16 scoring": (1.0, bf16)}
    fp32 = H100_FLOPS["fp32"] / peak
    return {
        "this CPU, one core": (1.0, None),
        "H100": (fp32, None),
        "H100, bf16 scoring": (fp32, H100_FLOPS["bf16"] / peak),
    }


def report(args, results: dict, device, info: dict) -> tuple[list[str], dict]:
    """The markdown section and the JSON keys."""
    paper, peak = results["paper"], results["matmul_flops"]
    gpu = device.type == "cuda"
    where = info.get("gpu", "") if gpu else f"this CPU ({info['cpu']}, {info['cores']} cores)"
    unit = "" if gpu else ", one core, CPU time"
    keys: dict = {"paper_matmul_gflops": peak / 1e9}
    md = [
        "## Paper scale: DiT/B cost model (issue 21)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `{results['command']}` on {where}, "
        f"in {results['seconds'] / 60:.1f} min. Matmul peak (float32{unit}): "
        f"{peak / 1e9:,.1f} GFLOP/s (best of 5).",
        "",
    ]
    if not gpu:
        md += [
            "**GPU rows: not run.** No GPU was available to this work; "
            "`python scripts/gpu_rows.py` runs them on one (README, Speed).",
            "",
        ]
    md += [
        "### Per-operation timings",
        "",
        ("Wall time" if gpu else "This process's CPU time on one thread (see Caveats)")
        + ", best of repeated calls, per sample. Forward: the scoring loss, "
        "inference mode. Unlearn: forward + backward with only the MLP weights trainable "
        "(MUCS C4); AdamW: one update of them. Gradients: `PerSampleGradients` over every "
        "weight, per (item, draw), from two draw counts (a per-item part besides). "
        "Projection: TRAK's BasicProjector as `Projector` sets it up, to 16,384 dimensions, "
        "per gradient in a training shard (the project's `shard_gb` of gradients); each "
        "block of the random matrix is regenerated for every shard.",
        "",
        "| shape | params | gradient dim | forward | unlearn fwd+bwd | AdamW update | "
        "D-TRAK grad / draw | DAS grad / draw | projector blocks x shard | projection / gradient |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sections = [(d, paper[d]) for d in args.datasets]
    if "validation" in results:
        sections.append(("digits dit_tiny", results["validation"]))
    for name, r in sections:
        ops, i = r["ops"], r["info"]
        shard = max(min(r["n"], s) for s in i["per_shard"].values())
        proj = i["proj_blocks"] * (ops["proj_block"] / shard + ops["proj_block_grad"])
        md.append(
            f"| {name} | {i['params'] / 1e6:.1f}M | {i['grad_dim'] / 1e6:.2f}M "
            f"| {ops['forward']:.3g} s | {ops['unlearn']:.3g} s | {ops['unlearn_update']:.3g} s "
            f"| {ops['dtrak_draw']:.3g} s | {ops['das_draw']:.3g} s "
            f"| {i['proj_blocks']:,} x {shard} | {fmt_s(proj)} |"
        )
        keys[f"paper_ops_{name.split()[0]}"] = {**ops, **i}
    md += [
        "",
        "### Projected time per generated item",
        "",
        f"Operation counts at the paper's settings: |Z| the training split, |N| = 100 scoring "
        f"pairs, 100 gradient draws per item (D-TRAK, DAS), MUCS unlearning "
        f"{args.unlearn_steps:g} steps of 100 + 100 samples (the paper's mean, Table 2 U-C3; "
        "there is no trained DiT/B here to count them), one ascent step of 100 draws "
        "(Forward-INF, AbU), m = 20 items sharing F1's loss grid, the training-set features, "
        "the Fisher and the kernel. "
        + (
            "'bf16 scoring': the loss grids at the measured bfloat16 forward time."
            if gpu
            else f"H100: the one-core time x the one-core matmul peak ({peak / 1e9:.0f} "
            "GFLOP/s) / 67 TFLOP/s (the H100 SXM's dense float32 peak; the project scores in "
            "float32 by default), assuming the same fraction of peak on both. 'bf16 "
            "scoring': the loss grids at 989 TFLOP/s (dense bfloat16) instead, as with "
            "`trainer.bf16_scoring=true` and in the authors' release; everything else stays "
            "float32."
        ),
    ]
    table: dict = {}
    for d in args.datasets:
        j = list(PAPER_SETUPS).index(d)
        cols = variants(results, d, gpu)
        md += [
            "",
            f"**{d}** ({paper[d]['n']:,} training items; minutes per item unless marked)",
            "",
            "| method | " + " | ".join(cols) + " | paper Table 6 (H100) |",
            "|---|" + "---|" * (len(cols) + 1),
        ]
        for method in METHODS:
            parts = paper[d]["parts"][method]
            row = {c: minutes(scaled(parts, *f)) for c, f in cols.items()}
            cells = [fmt_s(v * 60) if "CPU" in c else f"{v:,.1f}" for c, v in row.items()]
            md.append(
                f"| {NAMES[method]} | " + " | ".join(cells) + f" | {PAPER_TABLE6[method][j]} |"
            )
            row.update(paper_table6=PAPER_TABLE6[method][j], parts_s=parts)
            table.setdefault(d, {})[method] = row
    keys["paper_minutes_per_item"] = table
    ratios = []
    for d in args.datasets:
        j = list(PAPER_SETUPS).index(d)
        cols = variants(results, d, gpu)
        last = list(cols)[-1]  # bf16 scoring
        tot = {m: table[d][m][list(cols)[0]] for m in METHODS}
        bf = {m: table[d][m][last] for m in METHODS}
        for other in ("dtrak", "das", "forward_inf", "abu"):
            keys[f"paper_mucs_vs_{other}_{d}"] = tot[other] / tot["mucs"]
        for other in ("dtrak", "das"):
            keys[f"paper_mucs_vs_{other}_{d}_bf16_scoring"] = bf[other] / bf["mucs"]
        t6 = {m: PAPER_TABLE6[m][j] for m in METHODS}
        ratios.append(
            f"| {d} | {tot['dtrak'] / tot['mucs']:.2f} | {tot['das'] / tot['mucs']:.2f} "
            f"| {tot['forward_inf'] / tot['mucs']:.2f} | {tot['abu'] / tot['mucs']:.2f} "
            f"| {bf['dtrak'] / bf['mucs']:.2f} / {bf['das'] / bf['mucs']:.2f} "
            f"| {t6['dtrak'] / t6['mucs']:.2f} / {t6['das'] / t6['mucs']:.2f} |"
        )
    first = args.datasets[0]
    keys["paper_mucs_vs_dtrak"] = keys[f"paper_mucs_vs_dtrak_{first}"]
    keys["paper_mucs_vs_das"] = keys[f"paper_mucs_vs_das_{first}"]
    md += [
        "",
        "MUCS's speed relative to each method: the method's time over MUCS's (higher = MUCS "
        "faster, as `mucs_vs_dtrak`). Float32 ratios are the same on this device and, "
        "scaled uniformly, on the H100. `paper_mucs_vs_dtrak` and `paper_mucs_vs_das` in "
        f"docs/benchmarks.json are the {first} float32 values.",
        "",
        "| dataset | vs D-TRAK | vs DAS | vs Forward-INF | vs AbU | bf16 scoring: vs D-TRAK "
        "/ DAS | paper: vs D-TRAK / DAS |",
        "|---|---|---|---|---|---|---|",
        *ratios,
        "",
        f"### Where the time goes ({first}, {list(variants(results, first, gpu))[-2]} "
        "float32, minutes by part)",
        "",
        "| method | parts |",
        "|---|---|",
    ]
    factor = list(variants(results, first, gpu).values())[-2]
    for method in METHODS:
        parts = scaled(paper[first]["parts"][method], *factor)
        md.append(
            f"| {NAMES[method]} | "
            + ", ".join(f"{k} {v / 60:,.1f}" for k, v in parts.items())
            + " |"
        )
    das = config(f"+experiment={first}_das").method
    das_gb = das.chunk * das.num_noises * paper[first]["info"]["grad_dim"] * 4 / 1e9
    md += [
        "",
        "Caveats:",
        "",
        f"- Load: this machine's load average was {results['load'][0]:.1f} at the start and "
        f"{results['load'][1]:.1f} at the end ({info['cores']} cores, shared with other "
        "jobs). "
        + (
            "Best-of-repeats damps that but does not remove it."
            if gpu
            else "Wall times then stretch by 2-4x, in bursts, so every CPU measurement here "
            "(ops, matmul peak, the check's real runs) is one thread's CPU time. Two idle "
            "cores would take about half the one-core time; the H100 column does not "
            "depend on it (one-core time x one-core peak / H100 peak)."
        ),
        "- The projection is hardly a matmul: `Projector`'s blocks of at most 2^27 entries "
        f"hold {das.proj_dim // paper[first]['info']['proj_blocks']} column(s) of the random "
        f"matrix for a {paper[first]['info']['grad_dim'] / 1e6:.0f}M-dim gradient, so each "
        "shard regenerates the whole matrix (16,384 x dim normal numbers) and streams the "
        "shard through it block by block. Its GPU speed-up need not follow the matmul "
        "peaks; `scripts/gpu_rows.py` measures it.",
        f"- Memory is not modelled: DAS's `chunk` {das.chunk} x {das.num_noises} draws of "
        f"{paper[first]['info']['grad_dim'] / 1e6:.0f}M-float per-draw gradients is "
        f"{das_gb:,.0f} GB at once.",
    ]
    if "validation" in results:
        v = results["validation"]
        md += [
            "",
            "### Check on the tiny model",
            "",
            f"The same per-op measurement on the digits `dit_tiny` setup ({v['n']} training "
            f"items, default method settings, a randomly initialised and perturbed network; "
            f"MUCS with the stop rule off and {v['steps']} unlearning steps), the model's "
            f"prediction, and a real run of the method's code on {v['k']} generated item(s), "
            f"setup amortised over m = {v['m']}. Both sides run on one thread and count "
            "this process's CPU time (seconds), which other jobs on this shared machine "
            "stretch far less than wall time. The prediction uses the mean of each op's "
            "repeated timings, as the minutes-long real run averages over the load; from "
            "their minimum it is the 'best-case' column.",
            "",
            "| method | predicted / item | measured / item | predicted / measured | "
            "setup predicted / measured | per item predicted / measured | best-case "
            "prediction | |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method, r in v["methods"].items():
            ok = abs(r["ratio"] - 1) <= 0.3
            md.append(
                f"| {NAMES[method]} | {r['predicted_s']:.1f} | {r['measured_s']:.1f} "
                f"| {r['ratio']:.2f} | {r['predicted_setup_s']:.1f} / "
                f"{r['measured_setup_s']:.1f} | {r['predicted_item_s']:.1f} / "
                f"{r['measured_item_s']:.1f} | {r['predicted_from_best_s']:.1f} "
                f"| {'within 30%' if ok else 'OFF BY > 30%'} |"
            )
            keys[f"paper_model_check_{method}"] = r
    keys["paper_assumptions"] = {
        "unlearn_steps": args.unlearn_steps,
        "m": 20,
        "h100_fp32_flops": H100_FLOPS["fp32"],
        "h100_bf16_flops": H100_FLOPS["bf16"],
        "device": device.type,
    }
    return md, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="*", default=list(PAPER_SETUPS),
                        choices=list(PAPER_SETUPS))  # fmt: skip
    parser.add_argument("--unlearn-steps", type=float, default=UNLEARN_STEPS)
    parser.add_argument("--validate", nargs="*", default=["mucs", "dtrak", "das"],
                        choices=list(METHODS), help="methods run for real on digits")  # fmt: skip
    parser.add_argument("--val-train-items", type=int, default=100, help="digits |Z|")
    parser.add_argument("--val-items", type=int, default=1, help="generated items timed")
    parser.add_argument("--val-steps", type=int, default=20, help="MUCS unlearning steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a 2-block DiT instead of DiT/B: checks the script, not the speed",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--unet", action="store_true", help="the UNet setups (UNET_SETUPS) instead of DiT/B"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    device = torch.device(args.device)
    start = time.perf_counter()
    info = machine()
    clock = time.perf_counter
    if device.type == "cpu":  # see CPU_PAPER
        torch.set_num_threads(1)
        clock = time.process_time
    results: dict = {"matmul_flops": matmul_flops(device, torch.float32, clock)}
    results["command"] = "make bench-paper  # " + " ".join(
        ["python scripts/bench_paper.py", *sys.argv[1:]]
    )
    results["load"] = [os.getloadavg()[0]]
    if args.unet:
        results["unet"] = unet_section(args, device)
        results["seconds"] = time.perf_counter() - start
        md, keys = unet_report(results, device, info, args.unlearn_steps)
        write(args.out, md, keys, "unet_", UNET_SECTION)
        log.info("done in %.1f min", results["seconds"] / 60)
        return
    results["paper"] = paper_section(args, device)
    if args.validate:
        results["validation"] = validation(args)
    results["seconds"] = time.perf_counter() - start
    results["load"].append(os.getloadavg()[0])
    md, keys = report(args, results, device, info)
    write(args.out, md, keys, "paper_", SECTION)
    log.info("done in %.1f min", results["seconds"] / 60)


def write(out: Path, md: list[str], keys: dict, prefix: str, markers) -> None:
    """Replace the `prefix` keys of benchmarks.json and the marked section of benchmarks.md."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "benchmarks.json"
    old = json.loads(json_path.read_text()) if json_path.exists() else {}
    old = {k: v for k, v in old.items() if not k.startswith(prefix)}
    json_path.write_text(json.dumps({**old, **keys}, indent=2) + "\n")
    replace_section(out / "benchmarks.md", "\n".join(md), markers)
    print("\n".join(md))


if __name__ == "__main__":
    main()
