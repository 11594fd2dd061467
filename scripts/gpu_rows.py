"""The GPU rows of docs/benchmarks.md in one command, within 8 minutes on one GPU.

    python scripts/gpu_rows.py --out gpu_rows     # on a machine with a CUDA GPU
    python scripts/gpu_rows.py --dry-run          # on a CPU: every step's logic at micro size

Steps, each a subprocess with a time limit: its own, or what is left of `--budget` (480 s)
if less; a failed or timed-out step does not stop the others:

1. paper: `scripts/bench_paper.py --datasets cifar10` on the GPU: DiT/B per-op timings
   measured on this GPU and the minutes per CIFAR10 item of MUCS, D-TRAK, DAS, AbU and
   Forward-INF projected from them (no scaling between devices).
2. bench: `scripts/bench.py` on the GPU: scoring throughput and fraction of the matmul peak
   in float32 and bfloat16, eager and compiled; per-item time of each method; bf16 against
   float32 scores on a really unlearned F2; the projected CIFAR10 scoring minutes.
3. ddp: a 1-GPU `trainer=ddp` micro run of the whole pipeline under torchrun (NCCL).
4. cifar10: a `cifar10_mucs` micro run (DiT/B, 32 px, EDM, MUCS) with `trainer=gpu` on
   small files written in the CIFAR10 python format.

Everything is written under --out: each step's log, bench/ and paper/ (benchmarks.md and
.json as `make bench` and `make bench-paper` write them, to paste into docs/ with the GPU's
name), runs/, and gpu_rows.json and gpu_rows.md, the summary. `--dry-run` runs on the CPU
(CUDA hidden) with micro sizes and skips the step that needs NCCL, saying so; its numbers
say nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def micro(steps: int) -> list[str]:
    """A pipeline run small enough for a smoke test: a few steps, two items, a small bank."""
    return [
        "logger=csv", "trainer.progress_bar=false", f"pretrain.steps={steps}",
        "pretrain.batch_size=16", "pretrain.warmup_steps=2", f"pretrain.checkpoint_every={steps}",
        f"retrain.steps={steps}", "generate.num_items=2", "generate.num_controls=2",
        "generate.num_steps=4", "method.max_steps=3", "method.num_noises=8",
        "method.batch_size=16", "method.ga_draws=16", "null_loss.num_batches=2",
        "evaluate.k_fraction=0.05",
    ]  # fmt: skip


TINY_NET = ["model.hidden=32", "model.depth=2", "model.heads=2", "model.registers=4"]


def write_cifar10(root: Path, per_batch: int, seed: int = 0) -> Path:
    """CIFAR10's python release layout: data_batch_1..5, test_batch and batches.meta, each
    a pickled {"data": (N, 3072) uint8, "labels": [N]}, with random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8),
            "labels": rng.integers(0, 10, per_batch).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]  # fmt: skip
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return root


def steps(args, out: Path) -> list[tuple[str, list[str] | None, int, str]]:
    """(name, command or None to skip, time limit s, what it shows) of each step."""
    py = sys.executable
    dry = args.dry_run
    runs = out / "runs"
    paper = [py, "scripts/bench_paper.py", "--datasets", "cifar10", "--out", str(out / "paper")]
    paper += (
        ["--smoke", "--validate", "mucs", "--val-train-items", "20", "--val-steps", "2"]
        if dry
        else ["--validate"]  # the tiny-model check runs on the CPU (make bench-paper)
    )
    bench = [py, "scripts/bench.py", "--out", str(out / "bench"), "--bf16", "--items", "1"]
    if dry:
        bench += ["--train-items", "30", "--mid-items", "2", "--num-noises", "4",
                  "--naive-items", "2", "--pretrain-steps", "10", "--no-compile",
                  "--methods", "mucs", "--set", "method.max_steps=3",
                  "method.num_noises=4"]  # fmt: skip
    ddp = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
           "mucs_pipeline", *micro(20), "dataset.subset=120", f"paths.runs_dir={runs / 'ddp'}",
           "trainer=ddp", "trainer.devices=1",
           "trainer.compile_scoring=false"]  # the launch and NCCL are the point  # fmt: skip
    cifar = [py, "-m", "mucs_pipeline", "+experiment=cifar10_mucs", *micro(3 if dry else 20),
             f"dataset.root={out / 'data'}", f"paths.runs_dir={runs / 'cifar10'}",
             "trainer=cpu" if dry else "trainer=gpu", *(TINY_NET if dry else [])]  # fmt: skip
    return [
        ("paper", paper, 120, "DiT/B per-op timings and minutes per CIFAR10 item"),
        ("bench", bench, 210, "scoring MFU fp32/bf16 eager/compiled, bf16 agreement"),
        ("ddp", None if dry else ddp, 75, "1-GPU trainer=ddp under torchrun (NCCL)"),
        ("cifar10", cifar, 150, "cifar10_mucs micro run, trainer=gpu, CIFAR10-format files"),
    ]


def run_step(name, command, limit, out: Path, env) -> dict:
    start = time.perf_counter()
    log = out / f"{name}.log"
    try:
        with open(log, "w") as f:
            done = subprocess.run(
                command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=limit
            )
        status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {limit} s"
    tail = log.read_text().splitlines()[-15:]
    return {"status": status, "seconds": time.perf_counter() - start, "log": str(log),
            "tail": tail}  # fmt: skip


def summary(name: str, out: Path) -> dict:
    """The numbers a step produced."""
    if name in ("paper", "bench"):
        path = out / name / "benchmarks.json"
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        if name == "paper":
            return {k: data[k] for k in ("paper_minutes_per_item", "paper_mucs_vs_dtrak",
                                         "paper_mucs_vs_das") if k in data}  # fmt: skip
        return {k: v for k, v in data.items() if k.startswith(("scoring_", "matmul_", "bf16_",
                "seconds_per_item", "mucs_vs", "cifar10_"))}  # fmt: skip
    results = sorted((out / "runs" / name).glob("*/seed*/evaluate/*/results.csv"))
    return {"results_csv": [p.read_text() for p in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_rows")))
    parser.add_argument("--dry-run", action="store_true", help="CPU, micro sizes, no NCCL")
    parser.add_argument("--only", nargs="*", help="run these steps alone")
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds for all steps: a step gets what is left, at most its own "
                        "limit")  # fmt: skip
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    import torch  # after argparse: --help stays fast

    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run on a GPU machine, or use --dry-run to check the logic")
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_cifar10(out / "data", per_batch=3 if args.dry_run else 20)
    device = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name()
    report: dict = {"device": device, "dry_run": args.dry_run, "steps": {}}
    start = time.perf_counter()
    for name, command, limit, what in steps(args, out):
        if args.only and name not in args.only:
            continue
        if command is None:
            print(f"[{name}] SKIPPED: needs CUDA and NCCL ({what}); not run in a dry run")
            report["steps"][name] = {"status": "skipped: needs CUDA and NCCL"}
            continue
        print(f"[{name}] {what}: {' '.join(command)}", flush=True)
        left = args.budget - (time.perf_counter() - start)
        if not args.dry_run and left < 20:
            print(f"[{name}] SKIPPED: {left:.0f} s of the {args.budget:.0f} s budget left")
            report["steps"][name] = {"status": "skipped: budget spent"}
            continue
        # a dry run shares a CPU: generous limits, it checks the logic, not the speed
        limit = 600 if args.dry_run else int(min(limit, left))
        result = run_step(name, command, limit, out, env)
        result["numbers"] = summary(name, out)
        report["steps"][name] = result
        print(f"[{name}] {result['status']} in {result['seconds']:.0f} s", flush=True)
        if not result["status"] == "ok":
            print("\n".join(result["tail"]))
    report["seconds"] = time.perf_counter() - start
    (out / "gpu_rows.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# GPU rows on {device}", "", f"Total {report['seconds']:.0f} s.", ""]
    lines += [f"- {n}: {r['status']}" for n, r in report["steps"].items()]
    for name in ("paper", "bench"):
        md = out / name / "benchmarks.md"
        if md.exists():
            lines += ["", f"## {name}", "", md.read_text()]
    (out / "gpu_rows.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 4 + len(report["steps"])]))
    print(f"written: {out / 'gpu_rows.md'}, {out / 'gpu_rows.json'}")


if __name__ == "__main__":
    main()
