"""Pretraining resume and common random numbers."""

import torch
from conftest import make_cfg

from mucs_pipeline.data import build_dataset
from mucs_pipeline.models import EDM
from mucs_pipeline.training import train


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_from_checkpoint_gives_the_same_weights(tmp_path):
    cfg = make_cfg(tmp_path)
    data, edm = build_dataset(cfg.dataset), EDM()
    straight = train(cfg, data, edm, tmp_path / "straight", steps=12)
    # Stop after 10 steps (checkpoints every 5), then resume to 12 as a killed job would.
    train(cfg, data, edm, tmp_path / "resumed", steps=10)
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").exists()
    resumed = train(cfg, data, edm, tmp_path / "resumed", steps=12)
    assert states_equal(straight, resumed)


def test_common_random_numbers_replay_pretraining_exactly(tmp_path):
    cfg = make_cfg(tmp_path)
    data, edm = build_dataset(cfg.dataset), EDM()
    f1 = train(cfg, data, edm, tmp_path / "pre", steps=8)
    # Nothing removed: the retrain is the pretraining, bit for bit.
    same = train(cfg, data, edm, tmp_path / "keep_all", steps=8, weights=torch.ones(len(data)))
    assert states_equal(f1, same)
    weights = torch.ones(len(data))
    weights[:30] = 0
    removed = train(cfg, data, edm, tmp_path / "removed", steps=8, weights=weights)
    assert not states_equal(f1, removed)
