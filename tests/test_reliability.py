"""Safe loading, artifact integrity and numerical guards."""

import itertools
import os

import pytest
import torch
from conftest import make_cfg

from mucs_pipeline import artifacts as io
from mucs_pipeline import pipeline, runner
from mucs_pipeline.artifacts import IntegrityError, UnsafeFileError
from mucs_pipeline.attribution.scoring import loss_matrix, noise_bank
from mucs_pipeline.data import build_dataset
from mucs_pipeline.layout import Layout
from mucs_pipeline.models import EDM
from mucs_pipeline.training import NonFiniteLossError, init_model, train


class Payload:
    """Unpickling this would run a shell command that leaves a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "scores.pt"
    torch.save({"scores": torch.zeros(2), "extra": Payload(marker)}, path)
    with pytest.raises(UnsafeFileError, match=f"{path} was refused as unsafe") as err:
        io.load(path)
    assert "posix.system" in str(err.value) and "weights_only" not in str(err.value)
    assert not marker.exists()


def test_rewriting_a_folder_removes_only_what_was_not_rewritten(tmp_path):
    for name in ("fig_old.png", "fig_kept.png", "table1.md", "notes.txt"):
        (tmp_path / name).write_text("before")
    with io.rewrite_folder(tmp_path, ["fig_*.png", "table*.*"]):
        io.atomic_write_text(tmp_path / "fig_kept.png", "after")
        io.atomic_write_text(tmp_path / "table1.md", "after")
        io.atomic_write_text(tmp_path / "fig_new.png", "after")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fig_kept.png", "fig_new.png", "notes.txt", "table1.md"
    ]  # fmt: skip
    with pytest.raises(RuntimeError), io.rewrite_folder(tmp_path, ["fig_*.png"]):
        raise RuntimeError("the report failed")  # a failed rewrite deletes nothing
    assert (tmp_path / "fig_new.png").read_text() == "after"


def test_a_crafted_training_checkpoint_is_refused_on_resume(tmp_path):
    cfg = make_cfg(tmp_path)
    data = build_dataset(cfg.dataset)
    marker, folder = tmp_path / "pwned", tmp_path / "pretrain"
    (folder / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": Payload(marker)}, folder / "checkpoints" / "last.ckpt")
    with pytest.raises(UnsafeFileError, match="last.ckpt was refused as unsafe"):
        train(cfg, data, EDM(), folder, steps=3)
    assert not marker.exists()


@pytest.fixture(scope="module")
def attributed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    pipeline.run(make_cfg(tmp, "stages=[pretrain,generate,null_loss,attribute]"))
    return tmp


def test_a_truncated_scores_file_is_detected_and_recomputed(attributed):
    cfg = make_cfg(attributed, "stages=[attribute]")
    layout = Layout(cfg)
    path = layout.dir("attribute", "mucs") / "scores.pt"
    original = io.load(path)["scores"]
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # a disk that filled up, a copy cut short
    assert layout.manifest("attribute", "mucs") is None
    with pytest.raises(IntegrityError, match="scores.pt is damaged .changed since its manifest"):
        pipeline.run(make_cfg(attributed, "stages=[attribute]", "strict=true"))
    pipeline.run(cfg)  # without strict: recomputed from the finished items
    assert torch.equal(io.load(path)["scores"], original)
    assert Layout(cfg).manifest("attribute", "mucs") is not None


def test_an_altered_artifact_of_the_same_size_is_detected(attributed):
    layout = Layout(make_cfg(attributed))
    path = layout.dir("generate") / "items.pt"
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    original = path.read_bytes()
    path.write_bytes(bytes(blob))
    try:
        assert layout.manifest("generate") is None
        assert layout.manifest("attribute", "mucs") is None  # built from it
    finally:
        path.write_bytes(original)
    assert layout.manifest("generate") is not None


def test_a_result_from_other_code_is_reused_with_a_warning(attributed, monkeypatch, caplog):
    cfg = make_cfg(attributed, "stages=[generate]")
    path = Layout(cfg).dir("generate") / "items.pt"
    before = path.stat().st_mtime_ns
    with caplog.at_level("WARNING", logger="mucs_pipeline.runner"):
        pipeline.run(cfg)
    assert not caplog.records  # same code: skipped quietly
    monkeypatch.setattr(runner, "code_version", lambda: "9.9.9+upgrade")
    with caplog.at_level("WARNING", logger="mucs_pipeline.runner"):
        pipeline.run(cfg)
    assert path.stat().st_mtime_ns == before  # still reused, not recomputed
    (record,) = caplog.records
    assert "generate was computed by mucs_pipeline 0.1.0" in record.getMessage()
    assert "this is 9.9.9+upgrade; force=true recomputes it" in record.getMessage()


def nan_at_call(monkeypatch, n: int) -> None:
    """EDM.loss returns NaN on its n-th call (0-based), as a diverging model would."""
    calls, original = itertools.count(), EDM.loss

    def loss(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return out * float("nan") if next(calls) == n else out

    monkeypatch.setattr(EDM, "loss", loss)


def test_a_nan_loss_stops_pretraining_naming_the_step_and_last_finite_loss(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path)
    data = build_dataset(cfg.dataset)
    nan_at_call(monkeypatch, 3)  # one loss call per training step
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite training loss nan at step 3; last finite loss \d"
    ):
        train(cfg, data, EDM(), tmp_path / "pretrain", steps=6)


def test_a_nan_loss_stops_scoring_naming_the_item_and_training_items(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path)
    data = build_dataset(cfg.dataset)
    net = init_model(cfg, data, 0).eval()
    edm = EDM()
    bank = noise_bank(edm, (1, 8, 8), 5, 0.7, seed=0)
    nan_at_call(monkeypatch, 1)  # the second batch of 10 training items
    with pytest.raises(
        NonFiniteLossError,
        match=r"non-finite loss while scoring \(score item 4\): 50 of 600 losses, e\.g\. training "
        r"items \[10, 11, 12, 13, 14\] at noise pairs \[0, 1, 2, 3, 4\]; last finite loss \d",
    ):
        loss_matrix(net, edm, data, bank, 50, desc="score item 4")
