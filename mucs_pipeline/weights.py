"""Bring your own F1 (`pretrain.init_from`): a trained network's weights read from this
project's `ema.pt`, a Lightning checkpoint, a safetensors file or a diffusers folder,
checked against the configured architecture before anything is computed."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.data import ImageData
from mucs_pipeline.keys import init_from
from mucs_pipeline.training import init_model

SAFETENSORS = ".safetensors"
# A Lightning checkpoint of this project's DiffusionTraining holds the EMA (F1) under
# "ema.module." and the trained weights under "net."; F1 is the EMA when it is there.
CHECKPOINT_PREFIXES = ("ema.module.", "net.")


class CheckpointMismatchError(io.ArtifactError):
    """Weights whose tensors do not fit the configured network (one line, exit status 2)."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The network weights a file holds: a state dict, a Lightning checkpoint's EMA (else
    its trained weights), a safetensors file's tensors, or a diffusers folder's UNet."""
    if path.is_dir():
        from mucs_pipeline import diffusers_folder

        return diffusers_folder.read_state_dict(path)
    if path.suffix == SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as err:
            raise io.DamagedFileError(path, f"not a readable safetensors file: {err}") from None
    obj = io.load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning
        state = obj["state_dict"]
        for prefix in CHECKPOINT_PREFIXES:
            found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if found:
                return found
        return state
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise io.ArtifactError(
            f"pretrain.init_from={str(path)!r} holds a {type(obj).__name__}, not network "
            "weights: expected an ema.pt, a Lightning .ckpt or a .safetensors file"
        )
    return obj


def first_mismatch(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """What first keeps `state` from loading into `net` (in the network's order), or None."""
    expected = net.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            return f"it has no tensor {name!r} (shape {tuple(tensor.shape)} in the network)"
        if state[name].shape != tensor.shape:
            return (
                f"tensor {name!r} has shape {tuple(state[name].shape)} in the file, "
                f"{tuple(tensor.shape)} in the configured network"
            )
    extra = [name for name in state if name not in expected]
    if extra:
        shape = tuple(state[extra[0]].shape)
        return f"it holds tensor {extra[0]!r} (shape {shape}), which the network has not"
    return None


def load_init(cfg: DictConfig, data: ImageData) -> torch.nn.Module:
    """The configured network with the weights of `pretrain.init_from`, or
    CheckpointMismatchError naming the first tensor that does not fit."""
    path = init_from(cfg)
    net = init_model(cfg, data, cfg.seed)
    state = read_state_dict(path)
    why = first_mismatch(net, state)
    if why is not None:
        raise CheckpointMismatchError(
            f"pretrain.init_from={str(path)!r} does not fit the configured network: {why}; "
            "set model and dataset as when it was trained"
        )
    net.load_state_dict(state)
    return net.eval()
