"""UNet backbones: the release's DDPM++ (model=unet_edm, unet_vp, unet_tiny), diffusers'
UNet2DModel (model=unet2d, unet2d_tiny), DDPM as diffusers computes it, and diffusers
folders (save_pretrained, DDPMPipeline) as F1."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import CONF, make_cfg, run_main, slow_unless
from omegaconf import OmegaConf
from test_query import read_csv, save_png

from mucs_pipeline.models import DDPM, EDM, Flow, NoiseInput, build_model

STAGES = "stages=[pretrain,generate,null_loss,attribute]"
# The release's parameter counts on unconditional CIFAR10, from its models/unet_edm.py and
# models/unet_vp.py built with configs/cifar10_unet_edm.yaml and cifar10_unet_vp.yaml.
RELEASE_PARAMETERS = {"unet_edm": 55_732_995, "unet_vp": 125_329_539}
# D-TRAK's CIFAR10/config.json (sail-sg/D-TRAK), as diffusers reads it.
DTRAK_CONFIG = {
    "act_fn": "silu", "attention_head_dim": None, "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False, "down_block_types": ["DownBlock2D", "AttnDownBlock2D",
    "DownBlock2D", "DownBlock2D"], "downsample_padding": 0, "flip_sin_to_cos": False,
    "freq_shift": 1, "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1,
    "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D",
    "AttnUpBlock2D", "UpBlock2D"],
}  # fmt: skip


def _model(name: str) -> OmegaConf:
    return OmegaConf.load(CONF / "model" / f"{name}.yaml")


@pytest.mark.parametrize("name", sorted(RELEASE_PARAMETERS))
def test_release_unets_have_the_releases_parameter_count(name):
    with torch.device("meta"):  # sizes only: no memory, no init
        net = build_model(_model(name), 32, 3, 0, aug_labels=True, diffusion=_model_diffusion())
    total = sum(p.numel() for p in net.parameters())
    assert abs(total - RELEASE_PARAMETERS[name]) <= 0.001 * RELEASE_PARAMETERS[name], total


def _model_diffusion(name: str = "edm"):
    return OmegaConf.load(CONF / "diffusion" / f"{name}.yaml")


def test_unet2d_is_dtraks_cifar10_unet():
    from diffusers import UNet2DModel

    with torch.device("meta"):
        ours = build_model(_model("unet2d"), 32, 3, 0, diffusion=_model_diffusion("ddpm"))
        theirs = UNet2DModel.from_config(DTRAK_CONFIG)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters())
    assert abs(count - 35.7e6) < 0.05e6  # "about 35.7M parameters"
    assert {k[len("unet.") :] for k in ours.state_dict()} == set(theirs.state_dict())


def test_the_release_unets_state_dict_names():
    """The release's module names, so that its checkpoints load (a few, from its code)."""
    net = build_model(_model("unet_tiny"), 8, 1, 10, aug_labels=True, diffusion=_model_diffusion())
    names = set(net.state_dict())
    for name in ("map_label.weight", "map_augment.emb.weight", "map_layer1.weight",
                 "enc.8x8_conv.weight", "enc.4x4_down.conv0.resample_filter",
                 "enc.4x4_block0.qkv.weight", "dec.4x4_in0.proj.weight",
                 "dec.8x8_block1.skip.weight", "dec.8x8_aux_conv.weight"):  # fmt: skip
        assert name in names, name


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_ddpm_schedule_is_diffusers(schedule):
    from diffusers import DDPMScheduler

    ours = DDPM(beta_schedule=schedule)
    theirs = DDPMScheduler(beta_schedule=schedule)
    assert torch.equal(ours.alpha_bar.float(), theirs.alphas_cumprod)


def test_ddpm_gives_a_diffusers_unet_its_integer_timestep_and_diffusers_loss():
    """Our DDPM loss through model=unet2d equals diffusers' add_noise + UNet(noisy, t) + MSE,
    bit for bit, at every timestep from 0 to 999."""
    from diffusers import DDPMScheduler

    torch.manual_seed(0)
    net = build_model(_model("unet2d_tiny"), 8, 1, 0, diffusion=_model_diffusion("ddpm")).eval()
    assert torch.equal(net.noise_input(torch.arange(1000).float() / 1000), torch.arange(1000.0))
    ddpm, scheduler = DDPM(), DDPMScheduler()
    t = torch.tensor([0, 1, 499, 998, 999])
    x, noise = torch.rand(5, 1, 8, 8) * 2 - 1, torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        ours = ddpm.loss(net, x, None, t.double(), noise)
        eps = net.unet(scheduler.add_noise(x, noise, t), t).sample
        theirs = (noise - eps).square().flatten(1).mean(dim=1)
    assert torch.equal(ours, theirs)


def test_noise_input_per_variant():
    c = torch.tensor([0.25, -0.5])
    assert torch.equal(NoiseInput("edm")(c), c)  # EDM's ln(sigma) / 4, as EDM's UNets
    assert torch.equal(NoiseInput("flow")(c), c * 1000)
    with pytest.raises(ValueError, match="a UNet takes edm, ddpm or flow"):
        NoiseInput("vp")


@pytest.mark.parametrize(
    ("name", "variant"),
    slow_unless(
        [(n, v) for n in ("unet_tiny", "unet2d_tiny") for v in ("edm", "ddpm", "flow")],
        [("unet_tiny", "edm")],
    ),
)
def test_every_variant_trains_a_unet_to_a_lower_loss(name, variant):
    variant = {"edm": EDM(), "ddpm": DDPM(), "flow": Flow()}[variant]
    torch.manual_seed(0)
    cfg = OmegaConf.create({"name": variant.name, "num_timesteps": 1000})
    net = build_model(_model(name), 8, 1, 10, diffusion=cfg)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    cond = torch.eye(10)[torch.arange(16) % 10]
    gen = torch.Generator().manual_seed(0)
    sigma, noise = variant.training_sigma(16, gen), torch.randn(16, 1, 8, 8, generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = variant.loss(net, x, cond, sigma, noise).mean()
    for _ in range(30):
        opt.zero_grad()
        loss = variant.loss(net, x, cond, sigma, noise).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first.item()
    out = variant.sample(net.eval(), torch.randn(2, 1, 8, 8), cond[:2], 4)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def _digits_unet(path, classes: int = 10):
    """A tiny class-conditional UNet2DModel for digits (8 px, 1 channel) saved both ways."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8,
        num_class_embeds=classes,
    )  # fmt: skip
    with torch.no_grad():  # off its init, so that every weight shapes the output
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    unet.save_pretrained(path / "bare")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(path / "pipe")
    return unet


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    path = tmp_path_factory.mktemp("diffusers")
    return path, _digits_unet(path)


def test_a_diffusers_folder_is_the_network(folders, tmp_path):
    from mucs_pipeline.data import build_dataset
    from mucs_pipeline.diffusers_folder import prepare
    from mucs_pipeline.weights import load_init

    path, unet = folders
    for folder in ("bare", "pipe"):
        cfg = make_cfg(tmp_path, "diffusion=ddpm", f"pretrain.init_from={path / folder}")
        data = build_dataset(cfg.dataset)
        prepare(cfg, 8, 1, data.cond_dim)
        assert cfg.model.name == "unet2d" and cfg.model.config.num_class_embeds == 10
        net = load_init(cfg, data)
        x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 500, 990])
        labels = torch.tensor([0, 3, 9])
        with torch.no_grad():  # one-hot conditions read the class table as diffusers' lookup
            theirs = unet(x, t, class_labels=labels).sample
            ours = DDPM().predict(net, x, torch.eye(10)[labels], t.double())
        # Not bit for bit: two UNet2DModels with the same weights differ by ~4e-7 already.
        assert torch.allclose(ours, theirs, atol=2e-6), (ours - theirs).abs().max()


@pytest.mark.parametrize(
    ("folder", "method"),
    slow_unless(
        [(f, m) for f in ("bare", "pipe") for m in ("mucs", "dtrak", "pixel")],
        [("pipe", "mucs")],
    ),
)
def test_a_diffusers_folder_is_attributed_and_queried(
    folder, method, folders, tmp_path, monkeypatch, capsys
):
    from mucs_pipeline.data import build_dataset

    path, _ = folders
    init = [f"pretrain.init_from={path / folder}", "diffusion=ddpm", f"method={method}",
            "trainer.threads=1"]  # fmt: skip
    code, err = run_main(monkeypatch, capsys, tmp_path / "runs", STAGES, *init)
    assert code == 0, err
    (scores,) = (tmp_path / "runs").glob(f"digits/seed0/attribute/{method}-*/scores.pt")
    scores = torch.load(scores, weights_only=True)["scores"]
    assert scores.shape == (2, 120) and torch.isfinite(scores).all()
    (manifest,) = (tmp_path / "runs").glob("digits/seed0/pretrain/*/manifest.json")
    assert json.loads(manifest.read_text())["metrics"]["num_params"] == 177_489
    # Query mode: a copy of training image 7 (pixel ranks the image itself first).
    data = build_dataset(make_cfg(tmp_path).dataset)
    save_png(data.x[7], tmp_path / "q" / str(int(data.labels[7])) / "a.png", bits=16)
    code, err = run_main(
        monkeypatch, capsys, tmp_path / "query", "+query=folder", f"query.root={tmp_path / 'q'}",
        "query.top_k=3", *init,
    )  # fmt: skip
    assert code == 0, err
    rows = read_csv(tmp_path / "query", method)
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    if method == "pixel":
        assert rows[0]["train_index"] == "7"


def test_the_python_api_takes_a_diffusers_folder(folders, tmp_path):
    from mucs_pipeline.api import load

    path, _ = folders
    run = load("debug=micro", "logger=csv", f"paths.runs_dir={tmp_path}", "diffusion=ddpm",
               f"pretrain.init_from={path / 'pipe'}", "method=pixel", "query.top_k=1")  # fmt: skip
    assert run.cfg.model.name == "unet2d"
    rows = run.attribute(run.data.x[[4]], labels=[int(run.data.labels[4])])
    assert rows[0]["train_index"] == 4


def _one_line(monkeypatch, capsys, runs, *overrides) -> str:
    code, err = run_main(monkeypatch, capsys, runs, *overrides)
    assert code == 2 and len(err) == 1, err
    assert not list(runs.glob("*/seed0/*"))  # nothing ran
    return err[0]


def test_a_mismatched_diffusers_folder_exits_2_with_one_line(
    folders, tmp_path, monkeypatch, capsys
):
    path, _ = folders
    pipe, runs = f"pretrain.init_from={path / 'pipe'}", tmp_path / "runs"
    line = _one_line(monkeypatch, capsys, runs, pipe)  # diffusion=edm, the default
    assert "its DDPMScheduler trains a DDPM: set diffusion=ddpm" in line
    line = _one_line(monkeypatch, capsys, runs, pipe, "diffusion=ddpm", "diffusion.beta_end=0.03")
    assert "beta_end=0.02, the config diffusion.beta_end=0.03: set diffusion.beta_end=0.02" in line
    other = tmp_path / "other"  # a UNet trained at 16 px
    shutil.copytree(path / "bare", other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "sample_size": 16}))
    line = _one_line(monkeypatch, capsys, runs, f"pretrain.init_from={other}")
    assert "the UNet has sample_size=16, the dataset 8 (8 px, 1 channel)" in line
    line = _one_line(
        monkeypatch,
        capsys,
        runs,
        pipe,
        "diffusion=ddpm",
        "dataset.conditional=false",
        "generate.cfg_weight=1",
    )
    assert "num_class_embeds=10, the dataset no conditions" in line
    (tmp_path / "empty").mkdir()
    line = _one_line(monkeypatch, capsys, runs, f"pretrain.init_from={tmp_path / 'empty'}")
    assert "a folder without a diffusers UNet2DModel" in line


def test_a_diffusers_folders_content_enters_the_keys(tmp_path):
    from mucs_pipeline.layout import Layout

    _digits_unet(tmp_path)
    cfg = make_cfg(tmp_path, f"pretrain.init_from={tmp_path / 'pipe'}")
    first = Layout(cfg).key("pretrain")
    config = tmp_path / "pipe" / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"clip_sample": true', '"clip_sample": false'))
    assert Layout(cfg).key("pretrain") != first


@pytest.mark.parametrize(
    ("model", "method"),
    slow_unless(
        [
            (m, x)
            for m in ("unet_tiny", "unet2d_tiny")
            for x in ("mucs", "pixel", "condition", "dtrak", "das", "forward_inf", "abu")
        ],
        [],  # make test-all; make test runs a UNet through the pipeline with a diffusers folder
    ),  # fmt: skip
)
def test_every_method_runs_on_every_backbone(model, method, tmp_path, monkeypatch, capsys):
    # AbU's Fisher-preconditioned step is ~1 / |gradient|: on a 12-step UNet, whose 1e-5-
    # initialised layers barely move the loss, its micro lr of 1e-3 overflows.
    extra = ["method.lr=1e-5"] if method == "abu" else []
    code, err = run_main(
        monkeypatch, capsys, tmp_path, f"model={model}", f"method={method}", "trainer.threads=1",
        *extra,
    )  # fmt: skip
    assert code == 0, err
    (scores,) = tmp_path.glob(f"digits/seed0/attribute/{method}-*/scores.pt")
    scores = torch.load(scores, weights_only=True)["scores"]
    assert scores.shape == (2, 120) and torch.isfinite(scores).all()
    assert list(tmp_path.glob("digits/seed0/evaluate/*/manifest.json"))


@pytest.mark.parametrize(
    "experiment",
    ["cifar10_mucs_unet", "cifar2_mucs", "cifar2_dtrak", "cifar2_das", "cifar10_ddpm_mucs",
     "cifar10_ddpm_dtrak", "cifar10_ddpm_das"],
)  # fmt: skip
def test_unet_experiments_build_their_networks(experiment):
    from hydra import compose, initialize_config_dir

    from mucs_pipeline import augment

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={experiment}"])
    labels = augment.labelled(cfg.pretrain.augment)
    with torch.device("meta"):
        net = build_model(cfg.model, 32, 3, 0, labels, diffusion=cfg.diffusion)
    total = sum(p.numel() for p in net.parameters())
    assert total == (55_732_995 if experiment == "cifar10_mucs_unet" else 35_746_307)
    if cfg.method.name == "mucs":  # the backbone's rule, not the DiT's MLP globs
        assert list(cfg.method.params) == list(cfg.model.mucs_params)


def test_cifar2_is_dtraks_stratified_draw(tmp_path):
    """dataset=cifar2: CIFAR10's classes 1 and 7, `train_size` of them stratified by class
    with train_test_split(random_state=42), in its order, named by their CIFAR10 index."""
    import pickle

    import numpy as np
    from sklearn.model_selection import train_test_split

    from mucs_pipeline.data import build_dataset

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = {}
    for name in [*(f"data_batch_{b}" for b in range(1, 6)), "test_batch"]:
        labels[name] = [i % 10 for i in range(20)]
        data = rng.integers(0, 256, (20, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels[name]}, f)
    cfg = make_cfg(tmp_path, "dataset=cifar2", f"dataset.root={tmp_path}",
                   "dataset.train_size=10", "dataset.test_size=2").dataset  # fmt: skip
    train, test = build_dataset(cfg), build_dataset(cfg, split="test")
    every = np.array(sum((labels[f"data_batch_{b}"] for b in range(1, 6)), []))
    kept = np.flatnonzero(np.isin(every, [1, 7]))
    expected, _ = train_test_split(kept, train_size=10, random_state=42, stratify=every[kept])
    assert train.source_index() == expected.tolist()  # D-TRAK's items, in its order
    assert sorted(train.labels.tolist()) == [1] * 5 + [7] * 5 and train.cond is None
    assert sorted(test.labels.tolist()) == [1, 7]
