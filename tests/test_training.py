"""Pretraining resume and common random numbers."""

import pytest
import torch
from conftest import make_cfg

from mucs_pipeline.data import build_dataset
from mucs_pipeline.models import EDM
from mucs_pipeline.training import train


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_resume_from_checkpoint_gives_the_same_weights(tmp_path, dropout):
    cfg = make_cfg(tmp_path, f"model.dropout={dropout}")
    data, edm = build_dataset(cfg.dataset), EDM()
    straight = train(cfg, data, edm, tmp_path / "straight", steps=12)
    # Stop after 10 steps (checkpoints every 5), then resume to 12 as a killed job would.
    train(cfg, data, edm, tmp_path / "resumed", steps=10)
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").exists()
    resumed = train(cfg, data, edm, tmp_path / "resumed", steps=12)
    assert states_equal(straight, resumed)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_common_random_numbers_replay_pretraining_exactly(tmp_path, dropout):
    """Dropout masks are part of the replayed stream too."""
    cfg = make_cfg(tmp_path, f"model.dropout={dropout}")
    torch.manual_seed(123)  # the global generator's state must not matter
    data, edm = build_dataset(cfg.dataset), EDM()
    f1 = train(cfg, data, edm, tmp_path / "pre", steps=8)
    # Nothing removed: the retrain is the pretraining, bit for bit.
    same = train(cfg, data, edm, tmp_path / "keep_all", steps=8, weights=torch.ones(len(data)))
    assert states_equal(f1, same)
    weights = torch.ones(len(data))
    weights[:30] = 0
    removed = train(cfg, data, edm, tmp_path / "removed", steps=8, weights=weights)
    assert not states_equal(f1, removed)


def test_augmentation_draws_after_the_noise(tmp_path):
    """Flips leave sigmas and noises as without augmentation: p = 0 draws nothing, and a
    flip-only recipe changes the images alone."""
    from conftest import perturb
    from omegaconf import OmegaConf

    from mucs_pipeline.augment import halves
    from mucs_pipeline.data import ImageData
    from mucs_pipeline.training import init_model, training_losses

    cfg = make_cfg(tmp_path)
    data = build_dataset(cfg.dataset)
    net = perturb(init_model(cfg, data, seed=0)).eval()
    idx, cpu = torch.arange(16), torch.device("cpu")
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    flips = OmegaConf.create({"p": 0.5, "xflip": True, "ops": []})
    off = OmegaConf.create({"p": 0.0, "xflip": True, "ops": []})
    # Which draws the recipe flips: the draw after sigmas and noises of the stream.
    g = gen()
    EDM().training_sigma(16, g), torch.randn((16, *data.x.shape[1:]), generator=g)
    which = halves(16, g)
    flipped = ImageData(x=torch.where(which[:, None, None, None], data.x[idx].flip(-1),
                                      data.x[idx]), labels=None, cond=data.cond[idx])  # fmt: skip
    with torch.no_grad():
        augmented = training_losses(net, EDM(), data, idx, gen(), cpu, augment=flips)
        plain = training_losses(net, EDM(), flipped, idx, gen(), cpu, augment=off)
        unflipped = training_losses(net, EDM(), data, idx, gen(), cpu, augment=None)
    assert 0 < which.sum() < 16
    assert torch.equal(augmented, plain) and not torch.equal(augmented, unflipped)


@pytest.mark.parametrize("subset, steps", [(40, 5), (120, 15)])
def test_pretrain_epochs_sets_the_step_count_from_the_training_set_size(tmp_path, subset, steps):
    """2 passes at batch 16: ceil(2 x items / 16) updates, pretraining and retraining alike."""
    from mucs_pipeline import pipeline
    from mucs_pipeline.config import prepare
    from mucs_pipeline.keys import pretrain_recipe
    from mucs_pipeline.layout import Layout

    overrides = [f"dataset.subset={subset}", "pretrain.epochs=2", "pretrain.batch_size=16"]
    cfg = prepare(make_cfg(tmp_path, *overrides, "stages=[pretrain]"))  # as every run does
    pipeline.run(cfg)
    assert cfg.pretrain.steps == cfg.retrain.steps == steps
    assert Layout(cfg).manifest("pretrain")["metrics"]["steps"] == steps
    # The keys hash what is trained: the same steps given directly share the units, and
    # runs from before the option existed keep their keys.
    given = [f"dataset.subset={subset}", "pretrain.batch_size=16", f"pretrain.steps={steps}"]
    plain = make_cfg(tmp_path, *given, "stages=[pretrain]")
    assert Layout(plain).key("pretrain") == Layout(cfg).key("pretrain")
    assert "epochs" not in pretrain_recipe(cfg) and pretrain_recipe(plain)["steps"] == steps
