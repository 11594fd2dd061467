"""A diffusers folder as F1 (`pretrain.init_from=<folder>`): a UNet2DModel saved with
`save_pretrained` (config.json and its weights), or a DDPMPipeline / DDIMPipeline folder
(model_index.json, unet/ and scheduler/). The folder's UNet config is the network
(`model=unet2d` with its `config`), its sample size and channels must be the dataset's,
and its scheduler must be the configured DDPM: a mismatch stops the run with one line
(exit status 2) that says which override makes them agree."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mucs_pipeline import artifacts as io

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
PREFIX = "unet."  # where models/unet2d.py holds the UNet2DModel
# scheduler config key -> (diffusion config key, the scheduler's default)
SCHEDULE_KEYS = {
    "num_train_timesteps": ("num_timesteps", 1000),
    "beta_start": ("beta_start", 0.0001),
    "beta_end": ("beta_end", 0.02),
    "beta_schedule": ("beta_schedule", "linear"),
    "clip_sample": ("clip_denoised", True),
}


class DiffusersFolderError(io.ArtifactError):
    """A diffusers folder that cannot be F1 here (one line, exit status 2)."""


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DiffusersFolderError(f"{path}: not a readable JSON file ({err})") from None


def unet_folder(root: Path) -> Path:
    """The folder holding the UNet2DModel: `root` itself (save_pretrained) or root/unet."""
    for folder in (root, root / "unet"):
        if (folder / "config.json").is_file():
            name = _json(folder / "config.json").get("_class_name")
            if name != "UNet2DModel":
                raise DiffusersFolderError(
                    f"pretrain.init_from={str(root)!r}: {folder / 'config.json'} describes a "
                    f"{name}, expected a UNet2DModel"
                )
            return folder
    raise DiffusersFolderError(
        f"pretrain.init_from={str(root)!r}: a folder without a diffusers UNet2DModel "
        "(config.json from save_pretrained, or a pipeline's unet/config.json)"
    )


def weights_file(folder: Path) -> Path:
    """The UNet's weights in `folder` (unet_folder's)."""
    for name in WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise DiffusersFolderError(f"pretrain.init_from: {folder} has no {WEIGHTS[0]}")


def files(root: Path) -> list[Path]:
    """The files that define F1: what its fingerprint hashes."""
    folder = unet_folder(root)
    out = [folder / "config.json", weights_file(folder)]
    scheduler = root / "scheduler" / "scheduler_config.json"
    return [*out, scheduler] if scheduler.is_file() else out


def model_config(raw: dict) -> dict:
    """`cfg.model` for the folder's UNet config `raw`: model=unet2d with its own arguments
    (diffusers' bookkeeping keys and the dataset-given sizes dropped)."""
    config = {k: v for k, v in raw.items() if not k.startswith("_")}
    for key in ("sample_size", "in_channels", "out_channels"):
        config.pop(key, None)
    return {"name": "unet2d", "arch": "unet2d", "mucs_params": [f"{PREFIX}*.weight"],
            "config": config}  # fmt: skip


def check_sizes(root: Path, raw: dict, resolution: int, channels: int) -> None:
    """The UNet (config `raw`) was trained on images of the dataset's size and channels."""
    size = raw.get("sample_size")
    size = size[0] if isinstance(size, list) else size
    got = {"sample_size": size, "in_channels": raw.get("in_channels"),
           "out_channels": raw.get("out_channels")}  # fmt: skip
    want = {"sample_size": resolution, "in_channels": channels, "out_channels": channels}
    for key, value in got.items():
        if value is not None and value != want[key]:
            raise DiffusersFolderError(
                f"pretrain.init_from={str(root)!r}: the UNet has {key}={value}, the dataset "
                f"{want[key]} ({resolution} px, {channels} channel{'s' * (channels > 1)}): "
                "set the dataset it was trained on"
            )


def check_scheduler(root: Path, diffusion: DictConfig) -> None:
    """The pipeline's scheduler is the configured DDPM, or one line saying what differs."""
    path = root / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return  # a bare UNet: the diffusion config is the user's word
    sched = _json(path)
    name, where = sched.get("_class_name"), f"pretrain.init_from={str(root)!r}"
    if name not in SCHEDULERS:
        raise DiffusersFolderError(
            f"{where}: its scheduler is a {name}; this project runs DDPM-trained pipelines "
            f"({' or '.join(SCHEDULERS)})"
        )
    if diffusion.name != "ddpm":
        raise DiffusersFolderError(f"{where}: its {name} trains a DDPM: set diffusion=ddpm")
    if sched.get("prediction_type", "epsilon") != "epsilon" or sched.get("trained_betas"):
        raise DiffusersFolderError(
            f"{where}: its {name} has prediction_type={sched.get('prediction_type')!r} or "
            "trained_betas; this project's DDPM predicts epsilon on a named beta schedule"
        )
    for key, (ours, default) in SCHEDULE_KEYS.items():
        value = sched.get(key, default)
        if value != diffusion[ours]:
            raise DiffusersFolderError(
                f"{where}: its {name} has {key}={value!r}, the config "
                f"diffusion.{ours}={diffusion[ours]!r}: set diffusion.{ours}={value!r}"
            )


def check_classes(root: Path, raw: dict, cond_dim: int) -> None:
    """A class-conditional UNet's (config `raw`) classes are the dataset's condition vectors."""
    classes = raw.get("num_class_embeds") or 0
    if classes != cond_dim:
        data = f"{cond_dim}-entry conditions" if cond_dim else "no conditions"
        raise DiffusersFolderError(
            f"pretrain.init_from={str(root)!r}: the UNet has num_class_embeds={classes or None}, "
            f"the dataset {data}: set the dataset (dataset.conditional) it was trained with"
        )


def prepare(cfg: DictConfig, resolution: int, channels: int, cond_dim: int) -> None:
    """Make `cfg` (being prepared) describe the folder's UNet and check the rest."""
    root = Path(cfg.pretrain.init_from).expanduser()
    raw = _json(unet_folder(root) / "config.json")
    check_sizes(root, raw, resolution, channels)
    check_classes(root, raw, cond_dim)
    check_scheduler(root, cfg.diffusion)
    cfg.model = OmegaConf.create(model_config(raw))


def read_state_dict(root: Path) -> dict[str, torch.Tensor]:
    """The UNet's weights under this project's names (PREFIX)."""
    path = weights_file(unet_folder(root))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = io.load(path)
    return {PREFIX + k: v for k, v in state.items()}
