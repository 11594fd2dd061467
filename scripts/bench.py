"""`make bench`: how fast the scoring engine and the attribution methods run on this machine.

Everything is measured in one process, side by side, and written to docs/benchmarks.md
(with the machine and the command) and docs/benchmarks.json:

- the matmul peak: FLOP/s of large square torch.matmul, same dtype as scoring;
- scoring throughput (loss evaluations per second) of the engine against a naive loop
  that recomputes F1's loss and evaluates one (item, noise pair) at a time;
- the speedup of caching F1's losses (per-item scoring: F1 + F2 grids against F2 alone);
- achieved FLOP/s of scoring (analytic FLOPs of the forward, from torch's FlopCounterMode)
  as a fraction of the matmul peak, for the tiny DiT and a mid-size one (width 384),
  eager and compiled;
- per-item attribution wall time of MUCS, D-TRAK, DAS, AbU and Forward-INF on the same
  briefly trained model and data (setup amortised over m = 20 items, as in a run);
- with `--bf16` (the default on a GPU): scoring in bfloat16 too (against the bfloat16
  matmul peak), and how well bf16 scores of a really unlearned F2 (the stop rule met or
  the step cap) agree with float32 ones;
- on a GPU, the same plus the projected minutes per CIFAR10 item with DiT/B.

Ratios in the JSON are "higher is better". Nothing here is asserted: targets are printed
next to the numbers and a missed target says so.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode

from mucs_pipeline import conf_dir
from mucs_pipeline.attribution import Context, build_method
from mucs_pipeline.attribution.mucs import normalized_skew
from mucs_pipeline.attribution.scoring import loss_matrix, noise_bank
from mucs_pipeline.attribution.unlearn import unlearn
from mucs_pipeline.data import build_dataset
from mucs_pipeline.models import build_diffusion, build_model
from mucs_pipeline.stages.null_loss import estimate_loss_null
from mucs_pipeline.training import train

ROOT = Path(__file__).resolve().parent.parent
MID = ["model.hidden=384", "model.depth=6", "model.heads=6", "model.cond_width=384"]
TARGETS = {  # issue 7
    "cache_speedup": 1.9,
    "scoring_mfu_mid": 0.5,
    "mucs_vs_dtrak": 3.0,
    "mucs_vs_das": 3.0,
}


# docs/benchmarks.md keeps the section that `make bench-paper` writes between these lines,
# and the LDS section (`scripts/bench.py --lds-only` rewrites it alone).
SECTION = ("<!-- bench-paper: written by scripts/bench_paper.py -->", "<!-- /bench-paper -->")
LDS_SECTION = ("<!-- bench-lds: written by scripts/bench.py -->", "<!-- /bench-lds -->")


def paper_section(path: Path, markers: tuple[str, str] = SECTION) -> str:
    """A marked section of a benchmarks.md (`make bench-paper`'s by default), with its
    markers ("" if none)."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(markers[0]), text.find(markers[1])
    return text[start : end + len(markers[1])] + "\n" if 0 <= start < end else ""


def replace_section(path: Path, body: str, markers: tuple[str, str] = SECTION) -> None:
    """Write `body` as a marked section of benchmarks.md (`make bench-paper`'s by
    default), keeping the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    old = paper_section(path, markers)
    rest = text.replace(old, "").rstrip("\n") if old else text.rstrip("\n")
    path.write_text(f"{rest}\n\n{markers[0]}\n{body}\n{markers[1]}\n")


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=["logger=csv", "trainer.progress_bar=false", *overrides])


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def timings(fn, repeats: int, warmup: bool = True, clock=time.perf_counter) -> list[float]:
    """Times (seconds of `clock`, wall by default) of `repeats` calls, after one warm-up call
    (unless `warmup` is false: for calls so slow that the minimum of the repeats is cheaper)."""
    if warmup:
        fn()
    out = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = clock()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(clock() - start)
    return out


def timed(fn, repeats: int = 1, clock=time.perf_counter) -> float:
    """Best wall time (or `clock` time) of `repeats` calls (seconds), after a warm-up call."""
    return min(timings(fn, repeats, clock=clock))


def matmul_flops(device: torch.device, dtype: torch.dtype, clock=time.perf_counter) -> float:
    # CPUs without bfloat16 matmul units run it ~50x slower than float32: a smaller size
    n = 8192 if device.type == "cuda" else 2048 if dtype != torch.bfloat16 else 512
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / timed(lambda: a @ b, repeats=5, clock=clock)


def forward_flops(net, diffusion, data) -> int:
    """FLOPs of one sample's loss evaluation (the network forward dominates)."""
    cond = None if data.cond is None else data.cond[:1]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        diffusion.loss(net, data.x[:1], cond, torch.ones(1), torch.randn_like(data.x[:1]))
    return counter.get_total_flops()


def perturbed(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A stand-in for F2: F1 with 1% noise on every weight."""
    other = copy.deepcopy(net)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p, q in zip(other.parameters(), net.parameters(), strict=True):
            p.copy_(q + 0.01 * q.abs().mean() * torch.randn(q.shape, generator=gen))
    return other.eval()


def naive_rate(f1, f2, diffusion, data, bank, items: int) -> float:
    """F2 loss evaluations per second of the per-item loop: for each (item, pair), F1's loss
    again and F2's loss, one forward at a time."""
    cond = data.cond
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(items):
            for j in range(len(bank.sigma)):
                args = (
                    data.x[i : i + 1],
                    None if cond is None else cond[i : i + 1],
                    bank.sigma[j : j + 1],
                    bank.noise[j : j + 1],
                )
                diffusion.loss(f1, *args)
                diffusion.loss(f2, *args)
    return items * len(bank.sigma) / (time.perf_counter() - start)


def cache_speedup(cfg, f1, f2, diffusion, data, bank) -> float:
    """Per-item scoring time recomputing F1's grid (F1 + F2) over the cached one (F2)."""
    seconds = [
        timed(lambda net=net: loss_matrix(net, diffusion, data, bank, 2048, cfg.trainer))
        for net in (f1, f2)
    ]
    return sum(seconds) / seconds[1]


def engine(cfg, net, data, bank, compile: bool = False, bf16: bool = False) -> float:
    """Loss evaluations per second of the engine (one network, the whole grid)."""
    tc = cfg.trainer.copy()
    tc.compile_scoring = compile
    diffusion = build_diffusion(cfg.diffusion)
    batch = cfg.method.score_batch

    def run():
        loss_matrix(net, diffusion, data, bank, batch, tc, bf16=bf16)

    seconds = timed(run)  # the warm-up call compiles
    return len(data) * len(bank.sigma) / seconds


def scoring_section(args, peaks: dict) -> tuple[dict, list[str]]:
    """Scoring throughput and its fraction of the matmul peak of the same dtype."""
    results, rows = {}, []
    for name, overrides, items in (("tiny", [], args.train_items), ("mid", MID, args.mid_items)):
        cfg = config(f"dataset.subset={items}", *overrides, *args.trainer)
        data = build_dataset(cfg.dataset)
        diffusion = build_diffusion(cfg.diffusion)
        net = build_model(cfg.model, data.x.shape[-1], data.x.shape[1], data.cond_dim).eval()
        bank = noise_bank(diffusion, tuple(data.x.shape[1:]), args.num_noises, 0.7, 0)
        flops = forward_flops(net, diffusion, data)
        params = sum(p.numel() for p in net.parameters())
        for bf16 in (False, True) if args.bf16 else (False,):
            for compiled in (False, True) if args.compile else (False,):
                rate = engine(cfg, net, data, bank, compile=compiled, bf16=bf16)
                mfu = rate * flops / peaks[bf16]
                tag = f"{name}_{'bf16_' if bf16 else ''}{'compiled' if compiled else 'eager'}"
                results[f"scoring_rate_{tag}"] = rate
                results[f"scoring_mfu_{tag}"] = mfu
                rows.append(
                    f"| {name} ({params / 1e6:.2f}M params, {flops / 1e6:.1f} MFLOP/forward)"
                    f"{', bf16' if bf16 else ''}{', compiled' if compiled else ''} "
                    f"| {rate:,.0f} | {rate * flops / 1e9:.1f} | {mfu:.1%} |"
                )
        if name == "tiny":
            f2 = perturbed(net, 1)
            naive = naive_rate(net, f2, diffusion, data, bank, args.naive_items)
            results["naive_rate_tiny"] = naive
            results["engine_vs_naive"] = results["scoring_rate_tiny_eager"] / naive
            results["cache_speedup"] = cache_speedup(cfg, net, f2, diffusion, data, bank)
        # The engine's best float32 configuration (compiled where it was measured).
        results[f"scoring_mfu_{name}"] = max(
            v
            for k, v in results.items()
            if k.startswith(f"scoring_mfu_{name}_") and "bf16" not in k
        )
    return results, rows


def methods_section(args) -> tuple[dict, list[str]]:
    """Per-item attribution time of each loss- or gradient-based method, same F1 and data."""
    overrides = [f"dataset.subset={args.train_items}", *args.trainer]
    cfg = config(*overrides, f"pretrain.steps={args.pretrain_steps}")
    data = build_dataset(cfg.dataset)
    diffusion = build_diffusion(cfg.diffusion)
    with tempfile.TemporaryDirectory() as tmp:
        log = logging.getLogger("bench")
        log.info("training F1 for %d steps", args.pretrain_steps)
        f1 = train(cfg, data, diffusion, Path(tmp) / "pretrain", args.pretrain_steps)
        loss_null = estimate_loss_null(cfg, data, diffusion)
        images = data.x[: args.items]
        conds = None if data.cond is None else data.cond[: args.items]
        times, rows = {}, []
        for method in args.methods:
            mcfg = config(*overrides, f"method={method}")
            ctx = Context(
                cfg=mcfg, data=data, diffusion=diffusion, net=f1, loss_null=loss_null,
                device=torch.device("cuda" if args.gpu else "cpu"),
                cache_dir=Path(tmp) / "cache" / method,
            )  # fmt: skip
            start = time.perf_counter()
            scorer = build_method(mcfg.method, ctx)
            scorer.prepare(images, conds)
            setup = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(args.items):
                scorer.score(i, images[i], None if conds is None else conds[i : i + 1])
            per_item = (time.perf_counter() - start) / args.items
            times[method] = setup / 20 + per_item
            rows.append(f"| {method} | {setup:.1f} | {per_item:.2f} | {times[method]:.2f} |")
        results = {f"seconds_per_item_{m}": t for m, t in times.items()}
        if args.bf16:
            results.update(bf16_agreement(config(*overrides), f1, data, diffusion, loss_null))
    for other in ("dtrak", "das", "abu", "forward_inf"):
        if "mucs" in times and other in times:
            results[f"mucs_vs_{other}"] = times[other] / times["mucs"]
    return results, rows


def lds_section(args) -> tuple[dict, list[str]]:
    """LDS subset models per hour on the digits recipe: one at a time by the Lightning
    trainer (as retrain trains), and K at a time stacked (mucs_pipeline.stacked)."""
    from mucs_pipeline import lds_units
    from mucs_pipeline.config import prepare
    from mucs_pipeline.stacked import train_stacked

    cfg = prepare(config("lds=on", *args.trainer))
    data, diffusion = build_dataset(cfg.dataset), build_diffusion(cfg.diffusion)
    steps, n = lds_units.steps(cfg), len(data)
    size = round(cfg.lds.alpha * n)
    subsets = [torch.randperm(n, generator=torch.Generator().manual_seed(i))[:size]
               for i in range(max(args.lds_models))]  # fmt: skip
    short, long = args.lds_steps, 2 * args.lds_steps

    def per_step(run) -> float:
        """Seconds per step without the fixed start-up: the slope between two lengths."""
        return (timed(lambda: run(long)) - timed(lambda: run(short))) / (long - short)

    with tempfile.TemporaryDirectory() as tmp:

        def alone(k):
            folder = Path(tmp) / f"alone{k}"
            train(cfg, data.subset(subsets[0]), diffusion, folder, k)
            shutil.rmtree(folder)

        rates = {("lightning", "Lightning, one at a time"): per_step(alone)}
    for k in args.lds_models:

        def stacked(s, k=k):
            train_stacked(cfg, data, diffusion, subsets[:k], list(range(k)), s)

        rates[f"stacked_{k}", f"stacked, {k} per pass"] = per_step(stacked) / k
    rows, results = [], {}
    for (key, name), seconds in rates.items():
        per_hour = 3600 / (seconds * steps)
        rows.append(f"| {name} | {1e3 * seconds:.1f} | {per_hour:.1f} |")
        results[f"lds_models_per_hour_{key}"] = per_hour
    intro = [
        "## LDS subset models",
        "",
        f"Digits recipe (`lds=on`): {size} of {n} items per subset, batch "
        f"{cfg.pretrain.batch_size}, {steps} steps per model (pretrain.steps x alpha); "
        f"wall seconds per model-step from the slope between {short} and {long} steps "
        "(start-up excluded), nothing else running.",
        "",
        "| trainer | ms per model-step | subset models / hour |",
        "|---|---|---|",
    ]
    return results, [*intro, *rows]


def bf16_agreement(cfg, f1, data, diffusion, loss_null: float) -> dict:
    """MUCS scores of one item under bfloat16 scoring against float32, on an F2 that really
    unlearned it (stop rule or step cap): rank correlation, top-2% overlap, loss error."""
    from scipy.stats import spearmanr

    method = cfg.method
    shape = tuple(data.x.shape[1:])
    bank = noise_bank(diffusion, shape, method.num_noises, method.schedule_fraction, cfg.seed)
    cond = None if data.cond is None else data.cond[:1]
    f2, info = unlearn(f1, data.x[0], cond, data, diffusion, loss_null, method, cfg, (cfg.seed, 0))
    losses = {
        bf16: [
            loss_matrix(net, diffusion, data, bank, method.score_batch, cfg.trainer, bf16=bf16)
            for net in (f1, f2)
        ]
        for bf16 in (False, True)
    }
    scores = {b: normalized_skew(*losses[b], method.eps) for b in losses}
    k = max(1, round(0.02 * len(data)))
    top = [set(scores[b].topk(k).indices.tolist()) for b in (False, True)]
    fp32, bf16 = losses[False][1], losses[True][1]
    return {
        "bf16_spearman": float(spearmanr(scores[False].numpy(), scores[True].numpy()).statistic),
        "bf16_top2pct_overlap": len(top[0] & top[1]) / k,
        "bf16_loss_rel_error_median": float(
            ((bf16 - fp32).abs() / fp32.abs().clamp(min=1e-3)).median()
        ),
        "bf16_agreement_unlearn_steps": info["steps"],
        "bf16_agreement_stop_rule_met": not info["hit_max_steps"],
    }


def projected_cifar10(rate_flops: float) -> dict:
    """Minutes per CIFAR10 item with DiT/B at the achieved FLOP/s: |Z| x |N| forwards of F2."""
    cfg = config("+experiment=cifar10_mucs", "dataset.download=false")
    net = build_model(cfg.model, 32, 3, 0).eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.zeros(1, 3, 32, 32), torch.zeros(1), None)
    forwards = 50000 * cfg.method.num_noises
    minutes = forwards * counter.get_total_flops() / rate_flops / 60
    return {"cifar10_dit_b_minutes_per_item": minutes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-items", type=int, default=600, help="|Z| (digits subset)")
    parser.add_argument("--mid-items", type=int, default=100, help="|Z| for the mid-size DiT")
    parser.add_argument("--num-noises", type=int, default=60, help="|N| for throughput")
    parser.add_argument("--naive-items", type=int, default=20, help="items of the naive loop")
    parser.add_argument("--items", type=int, default=2, help="generated items per method")
    parser.add_argument("--pretrain-steps", type=int, default=400, help="F1 training steps")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--methods", nargs="+", default=["mucs", "dtrak", "das", "abu",
                        "forward_inf"], help="methods timed per item")  # fmt: skip
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 scoring rows and agreement (default: on a GPU)")  # fmt: skip
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of every run, e.g. method.max_steps=5")  # fmt: skip
    parser.add_argument("--lds-steps", type=int, default=20, help="steps timed per LDS trainer")
    parser.add_argument("--lds-models", type=int, nargs="+", default=[1, 8, 16],
                        help="models per stacked pass timed")  # fmt: skip
    parser.add_argument("--lds-only", action="store_true",
                        help="time only the LDS trainers; rewrite only their section")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    args.gpu = torch.cuda.is_available()
    args.bf16 = args.gpu if args.bf16 is None else args.bf16
    args.trainer = ["trainer=gpu"] if args.gpu else []
    args.trainer += args.set
    device = torch.device("cuda" if args.gpu else "cpu")
    dtype = torch.float32  # scoring runs in float32 (bf16 is a switch, off by default)

    info = machine()
    command = "make bench  # " + " ".join(["python scripts/bench.py", *sys.argv[1:]])
    lds, lds_rows = lds_section(args)
    lds_md = [*lds_rows, "", f"Measured {time.strftime('%Y-%m-%d')} with `{command}`."]
    md_path, json_path = args.out / "benchmarks.md", args.out / "benchmarks.json"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.lds_only:
        replace_section(md_path, "\n".join(lds_md), LDS_SECTION)
        old = json.loads(json_path.read_text()) if json_path.exists() else {}
        json_path.write_text(json.dumps({**old, **lds}, indent=2) + "\n")
        print("\n".join(lds_md))
        return
    peak = matmul_flops(device, dtype)
    peaks = {False: peak, True: matmul_flops(device, torch.bfloat16) if args.bf16 else None}
    results: dict = {"matmul_gflops": peak / 1e9, **lds}
    if args.bf16:
        results["matmul_gflops_bf16"] = peaks[True] / 1e9
    logging.info("matmul peak %.1f GFLOP/s", peak / 1e9)
    scoring, scoring_rows = scoring_section(args, peaks)
    results.update(scoring)
    logging.info("scoring %s", scoring)
    methods, method_rows = methods_section(args)
    results.update(methods)
    if args.gpu:
        results.update(projected_cifar10(results["scoring_mfu_mid"] * peak))
    if args.gpu:
        results["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:  # Linux reports kilobytes
        results["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    verdicts = [
        f"| `{k}` | {results[k]:.2f} | >= {t} | {'met' if results[k] >= t else 'MISSED'} |"
        for k, t in TARGETS.items()
        if k in results
    ]
    md = [
        "# Benchmarks",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `{command}` (one process).",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        f"Matmul peak ({dtype}, {device.type}): {results['matmul_gflops']:.1f} GFLOP/s"
        + (f"; bfloat16 {results['matmul_gflops_bf16']:.1f} GFLOP/s." if args.bf16 else "."),
        "",
        "## Scoring engine",
        "",
        f"Loss grid of {args.train_items} (tiny) or {args.mid_items} (mid) digits training "
        f"items x {args.num_noises} pairs, float32 unless marked bf16 (autocast; against "
        "the bfloat16 matmul peak), `score_batch` 2000 forwards.",
        "",
        "| model | loss evaluations / s | GFLOP/s | of matmul peak |",
        "|---|---|---|---|",
        *scoring_rows,
        "",
        f"- Naive loop (F1 recomputed, one pair at a time, {args.naive_items} items): "
        f"{results['naive_rate_tiny']:,.0f} F2 evaluations / s; the engine is "
        f"{results['engine_vs_naive']:.1f}x faster.",
        f"- F1 cache: per-item scoring {results['cache_speedup']:.2f}x faster than "
        "recomputing F1's grid for every item.",
        "",
        "## Attribution time per generated item",
        "",
        f"Same F1 (tiny DiT, {args.pretrain_steps} steps), {args.train_items} training items,"
        f" {args.items} items timed; setup (caches, features, Fisher) amortised over m = 20.",
        "",
        "| method | setup s | per item s | amortised s / item |",
        "|---|---|---|---|",
        *method_rows,
        "",
        *(
            [
                f"bf16 against float32 scoring, MUCS scores of one item after "
                f"{results['bf16_agreement_unlearn_steps']} real unlearning steps (stop rule "
                f"{'met' if results['bf16_agreement_stop_rule_met'] else 'not met: step cap'}):"
                f" Spearman {results['bf16_spearman']:.3f}, top-2% overlap "
                f"{results['bf16_top2pct_overlap']:.0%}, median relative loss error "
                f"{results['bf16_loss_rel_error_median']:.2%}.",
                "",
            ]
            if "bf16_spearman" in results
            else []
        ),
        "## Targets (issue 7)",
        "",
        "| key | value | target | |",
        "|---|---|---|---|",
        *verdicts,
        "",
        f"Peak memory: {results['peak_memory_mb']:.0f} MB.",
    ]
    if "cifar10_dit_b_minutes_per_item" in results:
        md.append(
            f"Projected CIFAR10 DiT/B: {results['cifar10_dit_b_minutes_per_item']:.1f} min "
            "of F2 scoring per item at the mid-size model's achieved FLOP/s."
        )
    md += ["", LDS_SECTION[0], *lds_md, LDS_SECTION[1]]
    kept = paper_section(md_path)  # `make bench-paper`'s results stay
    md_path.write_text("\n".join(md) + "\n" + ("\n" + kept if kept else ""))
    old = json.loads(json_path.read_text()) if json_path.exists() else {}
    paper = {k: v for k, v in old.items() if k.startswith("paper_")}
    json_path.write_text(
        json.dumps({"machine": info, "command": command, **results, **paper}, indent=2) + "\n"
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
