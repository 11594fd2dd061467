"""debug=micro for every method, and method_settings in a multirun over several methods."""

import subprocess
import sys

import pytest
import torch
from conftest import CONF
from hydra import compose, initialize_config_dir

from mucs_pipeline import artifacts as io
from mucs_pipeline.attribution.base import METHODS
from mucs_pipeline.layout import Layout
from mucs_pipeline.method_config import apply_method_settings, apply_model_settings
from mucs_pipeline.validate import validate


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    apply_method_settings(cfg)
    apply_model_settings(cfg)
    return cfg


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"random"}))
def test_debug_micro_is_a_valid_micro_config_for_every_method(method, tmp_path):
    cfg = compose_cfg("debug=micro", f"method={method}", f"paths.runs_dir={tmp_path}")
    if method not in ("clip", "dino", "ensemble"):  # they (its components) need downloaded weights
        validate(cfg)
    assert cfg.pretrain.steps == 12 and cfg.generate.num_items == 2 and cfg.model.hidden == 32
    for key, value in cfg.method_settings.items():
        if key in cfg.method:
            assert cfg.method[key] == value, key
    assert "max_steps" not in cfg.method or cfg.method.max_steps == 3
    layout = Layout(cfg)
    for component in layout.components(method):  # an ensemble's components too
        if "num_noises" in layout.method_cfg(component):
            assert layout.method_cfg(component).num_noises == 8, component


def test_model_settings_shrink_the_dit_and_leave_a_unet_as_it_is(tmp_path):
    dit = compose_cfg("debug=micro", "+experiment=cifar10_mucs", f"paths.runs_dir={tmp_path}")
    assert (dit.model.name, dit.model.hidden, dit.model.depth) == ("dit_b", 32, 2)  # debug wins
    unet = compose_cfg("debug=micro", "model=unet_tiny", f"paths.runs_dir={tmp_path}")
    assert "hidden" not in unet.model and unet.model.model_channels == 16
    validate(unet)


def test_method_settings_apply_only_where_a_method_has_the_key():
    cfg = compose_cfg("method=pixel", "+method_settings.max_steps=50")
    assert "max_steps" not in cfg.method
    cfg = compose_cfg("method=mucs", "+method_settings.max_steps=50")
    assert cfg.method.max_steps == 50


@pytest.mark.slow
def test_a_multirun_over_methods_takes_a_method_specific_setting(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mucs_pipeline", "-m", "debug=micro", "method=mucs,pixel",
         "++method_settings.max_steps=2", "logger=csv", "trainer.progress_bar=false",
         f"paths.runs_dir={tmp_path}"],
        cwd=CONF.parent, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "All 2 jobs of this multirun" in out.stdout
    (mucs,) = (tmp_path / "digits" / "seed0" / "attribute").glob("mucs-*/scores.pt")
    assert torch.equal(io.load(mucs)["steps"], torch.tensor([2, 2]))
    assert list((tmp_path / "digits" / "seed0" / "evaluate").glob("pixel-*/results.csv"))


def test_a_method_key_set_on_the_command_line_wins_over_method_settings(tmp_path):
    from conftest import make_cfg

    assert make_cfg(tmp_path).method.max_steps == 3  # debug=micro's method_settings
    cfg = make_cfg(tmp_path, "method.max_steps=50", "++method.num_noises=6")
    assert (cfg.method.max_steps, cfg.method.num_noises) == (50, 6)
    assert cfg.method.batch_size == 20  # the keys not set on the command line still apply
