"""Config validation: bad input stops with exit code 2 and one line per problem, before
anything is written; property tests over numeric values."""

import pytest
import torch
from conftest import make_cfg, run_cli, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from mucs_pipeline.errors import ConfigError
from mucs_pipeline.evaluation.metrics import neg_mse
from mucs_pipeline.validate import validate

# (overrides, the start of the one line naming the key and the value)
MALFORMED = [
    (["pretrain.lr=-1"], "pretrain.lr=-1: expected a number > 0"),
    (["pretrain.steps=0"], "pretrain.steps=0: expected an integer > 0"),
    (["pretrain.steps=1.5"], "pretrain.steps=1.5: expected a value of type int"),
    (["pretrain.ema_decay=1.0"], "pretrain.ema_decay=1.0: expected a number in [0, 1)"),
    (["evaluate.k_fraction=0"], "evaluate.k_fraction=0: expected a fraction in (0, 1)"),
    (["evaluate.k_fraction=1.5"], "evaluate.k_fraction=1.5: expected a fraction in (0, 1)"),
    (["evaluate.k_fraction=0.6"], "evaluate.k_fraction=0.6: k x m = 72 x 2 exceeds the 120"),
    (["method.lam=0"], "method.lam=0: expected a number > 0"),
    (["method.lam=abc"], "method.lam='abc': expected a value of type float"),
    (["method.max_steps=0"], "method.max_steps=0: expected an integer > 0"),
    (["method.schedule_fraction=1.5"], "method.schedule_fraction=1.5: expected a fraction in"),
    (["method.name=nope"], "method.name='nope': expected one of random, condition"),
    (["generate.num_items=0"], "generate.num_items=0: expected an integer > 0"),
    (["generate.num_controls=-2"], "generate.num_controls=-2: expected an integer >= 0"),
    (["seed=-1"], "seed=-1: expected an integer in [0, 92233720368546]"),
    (["seed=abc"], "seed='abc': expected a value of type int"),
    (["model.heads=5"], "model.heads=5: expected a divisor of model.hidden=32"),
    (["dataset.resolution=9"], "dataset.resolution=9: expected a multiple of"),
    (["stages=[pretrain,bogus]"], "stages=['pretrain', 'bogus']: unknown ['bogus']"),
    (["metric.names=[ssim,foo]"], "metric.names=['ssim', 'foo']: unknown 'foo'"),
    (["trainer.accelerator=tpu"], "trainer.accelerator='tpu': expected cpu or gpu"),
    (["trainer.devices=0"], "trainer.devices=0: expected an integer > 0"),
    (["pretrain.augment.p=1.5"], "pretrain.augment.p=1.5: expected a probability in [0, 1]"),
    (["pretrain.augment.ops=[shear]"], "pretrain.augment.ops=['shear']: expected some of"),
    (["pretrain.patience=0"], "pretrain.patience=0: expected an integer > 0"),
    (["dataset.subset=null", "pretrain.patience=5"], "pretrain.patience: early stopping needs"),
    (
        ["dataset=cifar10", "dataset.root=/nonexistent", "generate.cfg_weight=1.0"],
        "dataset.root='/nonexistent': no such folder",
    ),
    (
        ["dataset=cifar10", "dataset.download=true"],
        "generate.cfg_weight=2.0: classifier-free guidance needs a conditional dataset",
    ),
    (["method=dino", "method.weights=/nonexistent.pth"], "method.weights='/nonexistent.pth'"),
    (  # an ensemble's components need their files too
        ["method=ensemble", "+method.overrides.dino={weights: /no.pth}"],
        "method.overrides.dino.weights='/no.pth': no such file (DINOv2 ViT-B/14 weights)",
    ),
    (
        ["metric=paper", "metric.skip_unavailable=false", "metric.sscd_weights=/no.pt"],
        "metric.sscd_weights='/no.pt': no such file",
    ),
]


@pytest.mark.parametrize("overrides,message", MALFORMED, ids=[" ".join(o) for o, _ in MALFORMED])
def test_malformed_config_exits_2_with_one_line_and_writes_nothing(
    tmp_path, overrides, message, monkeypatch, capsys
):
    """The command line, in-process: `python -m mucs_pipeline <micro> <overrides>`."""
    code, stderr = run_main(monkeypatch, capsys, tmp_path, *overrides)
    assert code == 2
    assert len([line for line in stderr if line.startswith(message)]) == 1
    assert not (tmp_path / "digits" / "seed0").exists()  # Hydra's logs live outside it
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("manifest.json"))


def test_the_command_line_exits_with_status_2_and_one_line_per_problem(tmp_path):
    done = run_cli(tmp_path, "pretrain.lr=-1", "method.lam=0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-3:] == [
        "invalid config:",
        "pretrain.lr=-1: expected a number > 0",
        "method.lam=0: expected a number > 0",
    ]
    assert not (tmp_path / "digits" / "seed0").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_requested_without_one(tmp_path):
    with pytest.raises(ConfigError, match="no CUDA device is visible"):
        validate(make_cfg(tmp_path, "trainer=gpu"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_cfg(tmp_path_factory.mktemp("validate"))


def problems_for(cfg, key, value) -> list[str]:
    cfg = cfg.copy()
    OmegaConf.update(cfg, key, value, force_add=False)
    try:
        validate(cfg)
    except ConfigError as err:
        return err.problems
    return []


_settings = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_settings
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_k_fraction_is_accepted_exactly_in_the_open_unit_interval(base, value):
    problems = problems_for(base, "evaluate.k_fraction", value)
    valid = 0 < value < 1
    assert (
        problems == []
        if valid
        else [p.split(":")[0] for p in problems] == [f"evaluate.k_fraction={value!r}"]
    )


@_settings
@given(st.floats(min_value=-1e6, max_value=1e6) | st.just(float("nan")) | st.integers(-5, 5))
def test_lambda_must_be_positive(base, value):
    problems = problems_for(base, "method.lam", value)
    assert (problems == []) == (value > 0)
    assert all(p.startswith(f"method.lam={value!r}:") for p in problems)


@_settings
@given(st.integers(-1000, 1000))
def test_item_counts_must_be_positive_integers(base, value):
    problems = problems_for(base, "generate.num_items", value)
    assert (problems == []) == (value > 0)


@_settings
@given(st.integers(1, 64), st.integers(1, 8))
def test_heads_must_divide_the_width(base, hidden, heads):
    cfg = base.copy()
    OmegaConf.update(cfg, "model.hidden", hidden)
    problems = problems_for(cfg, "model.heads", heads)
    assert (problems == []) == (hidden % heads == 0)


@pytest.mark.parametrize(
    "a,b,message",
    [
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 9), r"expected two \(N, C, H, W\) batches"),
        (torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), r"expected two \(N, C, H, W\) batches"),
        (torch.full((2, 1, 8, 8), 255.0), torch.zeros(2, 1, 8, 8), r"scaled to \[-1, 1\].*0-255"),
        (torch.full((2, 1, 8, 8), float("nan")), torch.zeros(2, 1, 8, 8), "expected finite"),
    ],
)
def test_metrics_refuse_images_of_the_wrong_shape_or_range(a, b, message):
    with pytest.raises(ValueError, match=message):
        neg_mse(a, b, None)
