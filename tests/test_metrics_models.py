"""Model-based similarities (SSCD, LPIPS, CLIP, DINO) on randomly initialised networks of
the real architectures: no download."""

import pytest
import torch
import torchvision
from conftest import perturb
from omegaconf import OmegaConf

from mucs_pipeline.evaluation import metrics
from mucs_pipeline.evaluation.metrics import similarities


class GeM(torch.nn.Module):
    """Generalised-mean pooling, as in SSCD's ResNet-50 descriptor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)


def sscd_like_torchscript(path):
    """SSCD disc_mixup's architecture (ResNet-50 trunk, GeM, 512-d projection, L2 norm),
    randomly initialised and saved as TorchScript, the release's format."""
    trunk = torchvision.models.resnet50(weights=None)
    trunk.fc = torch.nn.Identity()
    trunk.avgpool = torch.nn.Identity()
    body = torch.nn.Sequential(*list(trunk.children())[:-2])

    class SSCD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.pool, self.proj = body, GeM(), torch.nn.Linear(2048, 512)

        def forward(self, x):
            return torch.nn.functional.normalize(self.proj(self.pool(self.body(x))), dim=1)

    torch.jit.script(SSCD().eval()).save(str(path))


@pytest.fixture(scope="module")
def model_metrics(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    sscd_like_torchscript(tmp / "sscd.pt")
    return OmegaConf.create(
        {
            "names": ["sscd", "lpips", "clip", "dino"],
            "batch_size": 8,
            "sscd_weights": str(tmp / "sscd.pt"),
            "lpips_net": "vgg",
            "lpips_torch_home": None,
            "clip_model": "ViT-B-32",  # ViT-L-14 runs in test_baselines; the code path is one
            "clip_pretrained": None,
            "clip_cache_dir": None,
            "dino_arch": "vit_base_patch14_dinov2",
            "dino_weights": None,
            "dino_image_size": 224,
        }
    )


@pytest.mark.slow  # make test-all: the metric networks change rarely; make test stays < 10 min
def test_model_metrics_are_maximal_for_identical_images_and_fall_with_noise(model_metrics):
    # A fresh DINOv2 maps every image to about the same vector (small layer-scale init):
    # give its weights a usual scale so that the embedding depends on the image.
    perturb(metrics._dino("vit_base_patch14_dinov2", None, 224).backbone, scale=0.05)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    same = similarities(x, x, model_metrics)
    assert set(same) == {"sscd", "lpips", "clip", "dino"}
    for name, value in same.items():
        assert value.shape == (2,)
        assert torch.allclose(value, torch.ones(2), atol=1e-4), name
    previous = {k: v.mean() for k, v in same.items()}
    for level in (0.5, 2.0):
        noisy = (x + level * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
        for name, value in similarities(x, noisy, model_metrics).items():
            assert value.mean() < previous[name], (name, level)
            previous[name] = value.mean()


def test_missing_weights_name_the_download(tmp_path, model_metrics):
    cfg = OmegaConf.merge(
        model_metrics,
        {"names": ["sscd"], "sscd_weights": str(tmp_path / "none.pt")},
    )
    with pytest.raises(FileNotFoundError, match="sscd_disc_mixup.torchscript.pt"):
        similarities(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), cfg)
    cfg = OmegaConf.merge(model_metrics, {"names": ["lpips"], "lpips_torch_home": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        similarities(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), cfg)


def test_unavailable_metric_is_skipped_only_when_asked(tmp_path, model_metrics):
    cfg = OmegaConf.merge(
        model_metrics,
        {
            "names": ["ssim", "sscd"],
            "sscd_weights": str(tmp_path / "none.pt"),
            "ssim_sigma": 1.5,
            "skip_unavailable": True,
        },
    )
    x = torch.zeros(1, 1, 8, 8)
    assert set(similarities(x, x, cfg)) == {"ssim"}
