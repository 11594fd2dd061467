"""bfloat16 against float32 MUCS scores on really unlearned models (docs/fidelity.md).

The authors' release scores under bfloat16 autocast. Whether that is safe depends on how
far unlearning moves F2 from F1: the scores are normalised differences of two losses. For
a few generated items this unlearns F2 for real (the method's stop rule and cap), scores
the training items in float32 and under bfloat16 autocast (F1 and F2 alike, as the
release does), and reports the Spearman correlation of the two score vectors and the
overlap of their top-k sets (k = 2% of the training set: what the evaluation removes).

  python scripts/bf16_agreement.py --runs runs

Two models: the digits F1 of `make run` (its generated items and L_null, from `--runs`),
and the mid-size DiT of `make bench` (width 384, 16.7M parameters) trained here on a
digits subset. Writes docs/bf16_agreement.json. The leave-k-out AUC with bfloat16 scores
comes from the pipeline: `python -m mucs_pipeline trainer.bf16_scoring=true`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from scipy.stats import spearmanr

from mucs_pipeline import artifacts as io
from mucs_pipeline import conf_dir
from mucs_pipeline.attribution.mucs import normalized_skew
from mucs_pipeline.attribution.scoring import loss_matrix, noise_bank
from mucs_pipeline.attribution.unlearn import unlearn
from mucs_pipeline.data import build_dataset
from mucs_pipeline.evaluation.protocol import top_k
from mucs_pipeline.generation import generate, item_plan
from mucs_pipeline.layout import Layout
from mucs_pipeline.models import build_diffusion
from mucs_pipeline.stages import common, null_loss
from mucs_pipeline.training import train

MID = ["model.hidden=384", "model.depth=6", "model.heads=6", "model.cond_width=384"]  # make bench
OUT = Path(__file__).resolve().parent.parent / "docs" / "bf16_agreement.json"


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=["logger=csv", "trainer.progress_bar=false", *overrides])


def agreement(cfg, f1, data, items: dict, loss_null: float, n_items: int) -> list[dict]:
    """Per generated item: unlearning steps, Spearman and top-k overlap of bf16 vs fp32."""
    diffusion = build_diffusion(cfg.diffusion)
    m = cfg.method
    bank = noise_bank(diffusion, tuple(data.x.shape[1:]), m.num_noises, m.schedule_fraction,
                      cfg.seed)  # fmt: skip
    k = top_k(len(data), cfg.evaluate.k_fraction)

    def losses(net, bf16):
        return loss_matrix(net, diffusion, data, bank, m.score_batch, bf16=bf16)

    loss_f1 = {bf16: losses(f1, bf16) for bf16 in (False, True)}
    rows = []
    for i in range(n_items):
        c_hat = None if items["cond"] is None else items["cond"][i : i + 1]
        f2, info = unlearn(f1, items["images"][i], c_hat, data, diffusion, loss_null, m, cfg,
                           stream=(cfg.seed, i))  # fmt: skip
        loss_f2 = {bf16: losses(f2, bf16) for bf16 in (False, True)}
        scores = {b: normalized_skew(loss_f1[b], loss_f2[b], m.eps) for b in (False, True)}
        top = [set(s.topk(k).indices.tolist()) for s in scores.values()]
        relative = (loss_f2[True] - loss_f2[False]).abs() / loss_f2[False].abs().clamp(min=1e-6)
        rows.append({
            "item": i,
            "unlearning_steps": info["steps"],
            "spearman": float(spearmanr(scores[False], scores[True]).statistic),
            "top_k_overlap": len(top[0] & top[1]) / k,
            "k": k,
            "median_relative_loss_error": relative.median().item(),
            "median_abs_score_fp32": scores[False].abs().median().item(),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def digits_model(runs: Path) -> tuple:
    """F1, data, generated items and L_null of the finished default run under `runs`."""
    cfg = config(f"paths.runs_dir={runs}")
    layout = Layout(cfg)
    data = common.dataset(cfg)
    f1 = common.load_net(cfg, data, layout.require("pretrain") / "ema.pt")
    items = io.load(layout.require("generate") / "items.pt")["target"]
    return cfg, f1, data, items, null_loss.read(layout)


def mid_model(steps: int, subset: int, n_items: int) -> tuple:
    """The mid-size DiT trained `steps` on a digits subset, its generated items and L_null."""
    cfg = config(*MID, f"dataset.subset={subset}", f"pretrain.steps={steps}")
    data = build_dataset(cfg.dataset)
    diffusion = build_diffusion(cfg.diffusion)
    with tempfile.TemporaryDirectory() as tmp:
        f1 = train(cfg, data, diffusion, Path(tmp), steps)
    plan = item_plan(cfg, data)["target"]
    images = generate(f1, diffusion, plan["seeds"][:n_items], plan["cond"][:n_items],
                      tuple(data.x.shape[1:]), cfg.generate, torch.device("cpu"))  # fmt: skip
    items = {"images": images, "cond": plan["cond"][:n_items]}
    return cfg, f1, data, items, null_loss.estimate_loss_null(cfg, data, diffusion)


def summary(rows: list[dict]) -> dict:
    return {
        "items": len(rows),
        "spearman_min": min(r["spearman"] for r in rows),
        "spearman_mean": sum(r["spearman"] for r in rows) / len(rows),
        "top_k_overlap_min": min(r["top_k_overlap"] for r in rows),
        "top_k_overlap_mean": sum(r["top_k_overlap"] for r in rows) / len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="runs folder of make run")
    parser.add_argument("--items", type=int, default=4, help="generated items per model")
    parser.add_argument("--mid-steps", type=int, default=300, help="training steps of the mid DiT")
    parser.add_argument("--mid-subset", type=int, default=100, help="training items of the mid DiT")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    for name, build in (
        ("digits_tiny", lambda: digits_model(args.runs)),
        ("digits_mid", lambda: mid_model(args.mid_steps, args.mid_subset, args.items)),
    ):
        start = time.time()
        cfg, f1, data, items, loss_null = build()
        rows = agreement(cfg, f1, data, items, loss_null, args.items)
        results[name] = {"training_items": len(data), "per_item": rows, **summary(rows),
                         "seconds": round(time.time() - start)}  # fmt: skip
        print(name, summary(rows), flush=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
