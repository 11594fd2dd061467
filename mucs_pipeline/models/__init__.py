"""Networks (DiT, the release's DDPM++ UNet, diffusers' UNet2DModel) and diffusion variants
(EDM, DDPM, flow matching)."""

from omegaconf import DictConfig, OmegaConf

from mucs_pipeline.models.ddpm import DDPM
from mucs_pipeline.models.diffusion import Diffusion
from mucs_pipeline.models.dit import DiT
from mucs_pipeline.models.edm import EDM
from mucs_pipeline.models.flow import Flow
from mucs_pipeline.models.unet import NoiseInput, SongUNet

VARIANTS = {v.name: v for v in (EDM, DDPM, Flow)}
# model.arch -> the network family (absent: the DiT, whose configs predate the key)
ARCHS = ("dit", "song_unet", "unet2d")


def build_diffusion(cfg: DictConfig) -> Diffusion:
    """The diffusion variant named by the diffusion group."""
    if cfg.name not in VARIANTS:
        raise ValueError(f"diffusion.name={cfg.name!r}: expected one of {sorted(VARIANTS)}")
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    kwargs.pop("name")
    return VARIANTS[cfg.name](**kwargs)


def build_model(
    cfg: DictConfig,
    resolution: int,
    channels: int,
    cond_dim: int,
    aug_labels: bool = False,
    diffusion: DictConfig | None = None,
):
    """The network named by the model group, sized for the dataset; `aug_labels` when the
    training recipe augments with labels (pretrain.augment). A UNet is told how the
    `diffusion` variant's c_noise maps to its timestep input (NoiseInput)."""
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    kwargs.pop("name")
    arch = kwargs.pop("arch", "dit")
    kwargs.pop("mucs_params", None)  # read by method=mucs
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r}: expected one of {list(ARCHS)}")
    if arch == "dit":
        return DiT(
            resolution=resolution, channels=channels, cond_dim=cond_dim, aug_labels=aug_labels,
            **kwargs,
        )  # fmt: skip
    if diffusion is None:
        raise ValueError(f"model.arch={arch!r}: a UNet is built for a diffusion config")
    noise_input = NoiseInput(diffusion.name, diffusion.get("num_timesteps", 1000))
    if arch == "song_unet":
        return SongUNet(
            resolution=resolution, channels=channels, cond_dim=cond_dim,
            noise_input=noise_input, aug_labels=aug_labels, **kwargs,
        )  # fmt: skip
    from mucs_pipeline.models.unet2d import UNet2D

    if aug_labels:
        raise ValueError(
            "model=unet2d has no augmentation-label input: set pretrain.augment.ops=[] "
            "(flips only) or pretrain.augment.p=0"
        )
    config = {**kwargs["config"], "sample_size": resolution}
    config.update(in_channels=channels, out_channels=channels)
    if config.get("num_class_embeds") is None and cond_dim:  # the dataset's classes
        config["num_class_embeds"] = cond_dim
    return UNet2D(config, cond_dim, noise_input)


__all__ = [
    "DDPM", "EDM", "DiT", "Diffusion", "Flow", "NoiseInput", "SongUNet",
    "build_diffusion", "build_model",
]  # fmt: skip
