"""A new attribution method is one file and one config: added here from a temporary
module and config folder only (no file of the package changes), it runs through
`plan=true`, the pipeline, an ensemble and the report."""

import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import CONF, run_main

from mucs_pipeline.report import report_comparisons

# The method's one file: F1 loss similarity, the cosine between the generated item's and
# each training item's F1 losses on a fixed bank of (sigma, n) pairs.
METHOD = '''
    """F1 loss similarity: cosine of F1's loss vectors on a noise bank."""

    import torch
    import torch.nn.functional as F

    from mucs_pipeline import artifacts as io
    from mucs_pipeline.attribution.base import Method
    from mucs_pipeline.attribution.scoring import cached_loss_matrix, training_bank


    class F1LossSimilarity(Method):
        name = "f1_loss"

        def __init__(self, cfg, ctx):
            super().__init__(cfg, ctx)
            shape = tuple(ctx.data.x.shape[1:])
            self.bank = training_bank(ctx.diffusion, shape, cfg.num_noises, ctx.cfg.seed, self.name)
            key = io.config_hash(self.name, cfg.num_noises, ctx.cfg.seed)
            self.train_losses = cached_loss_matrix(ctx, self.bank, key, cfg.score_batch)

        @classmethod
        def cost(cls, cfg, n, m):
            return (n + m) * cfg.num_noises, 0, 0  # every item's losses on the bank

        @torch.no_grad()
        def score(self, index, x_hat, c_hat):
            j, dev = len(self.bank.sigma), self.ctx.device
            c = None if c_hat is None else c_hat.expand(j, -1).to(dev)
            x = x_hat.expand(j, *x_hat.shape).to(dev)
            sigma, noise = self.bank.sigma.to(dev), self.bank.noise.to(dev)
            item = self.ctx.diffusion.loss(self.ctx.net.to(dev), x, c, sigma, noise).cpu()
            return F.cosine_similarity(self.train_losses, item[None], dim=1), {}
'''

# Its one config, and an ensemble of it with pixel similarity, in the user's config folder.
CONFIGS = {
    "f1_loss.yaml": """
        # F1 loss similarity (tests/test_method_interface.py).
        name: f1_loss
        kind: f1_similarity.F1LossSimilarity  # the class, by import path
        num_noises: 8  # (sigma, n) pairs of the bank
        score_batch: 2000  # forwards per scoring batch
    """,
    "ensemble_f1.yaml": """
        name: ensemble_f1
        kind: ensemble
        weights: {f1_loss: 2, pixel: 1}
        overrides: {}
    """,
}


@pytest.mark.slow
def test_a_method_from_one_file_and_one_config_runs_everywhere(tmp_path, monkeypatch, capsys):
    plugin, conf, runs = tmp_path / "plugin", tmp_path / "conf", tmp_path / "runs"
    plugin.mkdir()
    (plugin / "f1_similarity.py").write_text(textwrap.dedent(METHOD))
    (conf / "method").mkdir(parents=True)
    for name, text in CONFIGS.items():
        (conf / "method" / name).write_text(textwrap.dedent(text))
    searchpath = f"hydra.searchpath=[file://{conf}]"

    # plan=true, as a user runs it: the module on PYTHONPATH, the config on the search path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), os.getenv("PYTHONPATH", "")])}
    plan = subprocess.run(
        [sys.executable, "-m", "mucs_pipeline", "debug=micro", "logger=csv", searchpath,
         "method=ensemble_f1", f"paths.runs_dir={runs}", "plan=true"],
        cwd=CONF.parent, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    rows = [line.split() for line in plan.stdout.splitlines() if line.startswith("attribute")]
    assert ["attribute", "f1_loss", "run", f"{(120 + 2) * 8:,}", "0"] in [r[:5] for r in rows]
    assert {r[1] for r in rows} == {"f1_loss", "pixel", "ensemble_f1", "random"}

    # The pipeline for the method, then for the ensemble, which reuses its scores.
    monkeypatch.syspath_prepend(str(plugin))
    for method in ("f1_loss", "ensemble_f1"):
        code, err = run_main(monkeypatch, capsys, runs, searchpath, f"method={method}")
        assert code == 0, err
    scores = torch.load(next(runs.glob("*/seed0/attribute/f1_loss-*/scores.pt")))["scores"]
    assert scores.shape == (2, 120) and torch.isfinite(scores).all()
    ensemble = next(runs.glob("*/seed0/attribute/ensemble_f1-*/scores.pt"))
    assert torch.load(ensemble)["scores"].shape == (2, 120)
    assert len(list(runs.glob("*/seed0/attribute/f1_loss-*"))) == 1  # computed once

    # The report: a row each, and the ensemble's weights.
    (out,) = report_comparisons(runs)
    with open(out / "table1_auc.csv") as f:
        assert {r["method"] for r in csv.DictReader(f)} == {"f1_loss", "ensemble_f1"}
    with open(out / "table3_ensembles.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["method"] == "ensemble_f1" and (row["f1_loss"], row["pixel"]) == ("2", "1")
