"""Pretrained networks from local files or caches, with an error that says what to download."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.lru_cache(maxsize=2)  # one load per process, however many caption sets it embeds
def open_clip_model(
    model: str, pretrained: str | None, cache_dir: str | None
) -> tuple[torch.nn.Module, object]:
    """An open_clip model (eval mode) and its tokenizer.

    `pretrained` is an open_clip tag found in `cache_dir` (e.g. "openai"), a local checkpoint
    file, or None for a randomly initialised network of the same architecture (tests).
    """
    import open_clip

    try:
        net = open_clip.create_model(
            model,
            pretrained=pretrained,
            cache_dir=cache_dir,
            require_pretrained=pretrained is not None,
        )
    except Exception as err:  # open_clip raises several types for a missing or unreachable file
        raise FileNotFoundError(
            f"open_clip weights {model!r} / {pretrained!r} are not available offline "
            f"(cache_dir={cache_dir!r}): {err}. On a machine with internet, run "
            f"`python -c \"import open_clip; open_clip.create_model('{model}', "
            f"pretrained='{pretrained}', cache_dir='CACHE')\"` and copy CACHE here (set the "
            "cache_dir key), or set the pretrained key to a local open_clip checkpoint file"
        ) from err
    return net.eval(), open_clip.get_tokenizer(model)


@torch.inference_mode()
def clip_text_embeddings(
    texts: list[str],
    model: str,
    pretrained: str | None,
    cache_dir: str | None,
    batch_size: int = 256,
) -> torch.Tensor:
    """L2-normalised CLIP-Text embeddings, (N, D)."""
    net, tokenizer = open_clip_model(model, pretrained, cache_dir)
    out = [
        torch.nn.functional.normalize(
            net.encode_text(tokenizer(texts[i : i + batch_size])).float(), dim=-1
        )
        for i in range(0, len(texts), batch_size)
    ]
    return torch.cat(out)


def to_rgb01(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1], (N, C, H, W) with C = 1 or 3 -> RGB in [0, 1]."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
    x = ((x.float() + 1) / 2).clamp(0, 1)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class ImageEncoder(torch.nn.Module):
    """A frozen image backbone with its resize and normalisation: [-1, 1] images -> unit vectors."""

    def __init__(self, backbone, size: int, mean, std, mode: str = "bicubic"):
        super().__init__()
        self.backbone, self.size, self.mode = backbone, size, mode
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, 3, 1, 1))

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_rgb01(x.to(self.mean.device))
        x = torch.nn.functional.interpolate(
            x, size=(self.size, self.size), mode=self.mode, align_corners=False, antialias=True
        )
        emb = self.backbone((x - self.mean) / self.std).float()
        return torch.nn.functional.normalize(emb, dim=-1)


def clip_image_encoder(model: str, pretrained: str | None, cache_dir: str | None) -> ImageEncoder:
    """open_clip's image tower (the authors' CLIP baseline: ViT-L-14 laion2b_s32b_b82k)."""
    net, _ = open_clip_model(model, pretrained, cache_dir)
    size = net.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    mean = getattr(net.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(net.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    return ImageEncoder(net.encode_image, size, mean, std).eval()


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def dino_encoder(arch: str, weights: str | None, image_size: int = 224) -> ImageEncoder:
    """DINOv2 through timm (class-token embedding); `weights` a local file, None = random init.

    The file is the official `dinov2_vitb14_pretrain.pth` or timm's `model.safetensors`;
    timm's checkpoint filter maps either onto its ViT and resamples the position grid.
    """
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    net = timm.create_model(arch, pretrained=False, num_classes=0, img_size=image_size)
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(
                f"DINOv2 weights not found at {weights!r}. Download "
                "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth "
                "(or timm/vit_base_patch14_dinov2.lvd142m's model.safetensors from the Hugging "
                "Face hub) and set the method's or metric's `weights` key to its path"
            )
        if str(weights).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(weights)
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(checkpoint_filter_fn(state, net))
    return ImageEncoder(net, image_size, IMAGENET_MEAN, IMAGENET_STD).eval()
