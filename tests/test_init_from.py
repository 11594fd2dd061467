"""`pretrain.init_from`: a network trained elsewhere (or earlier) used as F1."""

from __future__ import annotations

import torch
from conftest import make_cfg, run_main
from omegaconf import open_dict

STAGES = "stages=[pretrain,generate,null_loss,attribute]"


def _scores(runs, method="mucs") -> torch.Tensor:
    (path,) = runs.glob(f"digits/seed0/attribute/{method}-*/scores.pt")
    return torch.load(path, weights_only=True)["scores"]


def _f1(runs):
    (path,) = runs.glob("digits/seed0/pretrain/*/ema.pt")
    return path


def test_own_f1_reproduces_the_pipelines_scores_bit_for_bit(tmp_path, monkeypatch, capsys):
    code, _ = run_main(monkeypatch, capsys, tmp_path / "a", STAGES, "trainer.threads=1")
    assert code == 0
    f1 = _f1(tmp_path / "a")
    code, _ = run_main(
        monkeypatch, capsys, tmp_path / "b", STAGES, "trainer.threads=1",
        f"pretrain.init_from={f1}",
    )  # fmt: skip
    assert code == 0
    assert torch.equal(_scores(tmp_path / "a"), _scores(tmp_path / "b"))
    assert _f1(tmp_path / "b").parent.name != f1.parent.name  # the file's hash is in the key
    assert not (_f1(tmp_path / "b").parent / "checkpoints").exists()  # nothing was trained


def test_the_files_content_enters_the_keys(tmp_path):
    from mucs_pipeline.layout import Layout

    path = tmp_path / "f1.pt"
    path.write_bytes(b"one")
    cfg = make_cfg(tmp_path, f"pretrain.init_from={path}")
    first = Layout(cfg).key("pretrain"), Layout(cfg).key("attribute", "mucs")
    path.write_bytes(b"another")
    second = Layout(cfg).key("pretrain"), Layout(cfg).key("attribute", "mucs")
    assert first[0] != second[0] and first[1] != second[1]
    # Without init_from the keys are those of runs made before the option existed.
    plain = make_cfg(tmp_path)
    with open_dict(plain):
        del plain.pretrain["init_from"]
    assert Layout(plain).key("pretrain") == Layout(make_cfg(tmp_path)).key("pretrain")


def test_lightning_checkpoint_and_safetensors_give_the_same_network(tmp_path):
    from safetensors.torch import save_file

    from mucs_pipeline.data import build_dataset
    from mucs_pipeline.models import EDM
    from mucs_pipeline.training import train
    from mucs_pipeline.weights import load_init

    cfg = make_cfg(tmp_path, "pretrain.steps=5")
    data = build_dataset(cfg.dataset)
    ema = train(cfg, data, EDM(), tmp_path / "pretrain", steps=5).state_dict()
    ckpt = tmp_path / "pretrain" / "checkpoints" / "last.ckpt"  # saved at step 5: the same EMA
    tensors = tmp_path / "f1.safetensors"
    save_file({k: v.contiguous() for k, v in ema.items()}, tensors)
    for path in (ckpt, tensors):
        cfg.pretrain.init_from = str(path)
        loaded = load_init(cfg, data).state_dict()
        assert loaded.keys() == ema.keys()
        assert all(torch.equal(loaded[k], ema[k]) for k in ema), path
    # A checkpoint without an EMA (another trainer's) gives its trained weights.
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if k.startswith("net.")}
    torch.save(state, tmp_path / "net.ckpt")
    cfg.pretrain.init_from = str(tmp_path / "net.ckpt")
    net = load_init(cfg, data).state_dict()
    assert torch.equal(net["out.weight"], state["state_dict"]["net.out.weight"])


def test_a_mismatched_checkpoint_exits_2_with_one_line_before_any_compute(
    tmp_path, monkeypatch, capsys
):
    from mucs_pipeline.data import build_dataset
    from mucs_pipeline.training import init_model

    cfg = make_cfg(tmp_path, "model.hidden=48")
    path = tmp_path / "other.pt"
    torch.save(init_model(cfg, build_dataset(cfg.dataset), 0).state_dict(), path)
    runs = tmp_path / "runs"
    code, err = run_main(monkeypatch, capsys, runs, f"pretrain.init_from={path}")
    assert code == 2
    assert len(err) == 1, err
    assert "does not fit the configured network" in err[0]
    # The first tensor, with its shape in the file and in the network.
    assert "'register_tokens' has shape (4, 48) in the file, (4, 32) in" in err[0]
    assert not list(runs.glob("*/seed0/*"))  # no stage ran
    code, err = run_main(monkeypatch, capsys, runs, f"pretrain.init_from={tmp_path / 'no.pt'}")
    assert code == 2 and "pretrain.init_from" in err[-1] and "no such file" in err[-1]
