"""MS-COCO captions: images center-cropped to 64x64, conditioned on CLIP-Text caption embeddings.

The captions JSON is read with the standard library (it is the format pycocotools and
torchvision's CocoCaptions read). Decoded images and text embeddings are computed once and
cached under `dataset.cache_dir`, so every later run starts from the cache.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from mucs_pipeline import artifacts as io
from mucs_pipeline.data.base import ImageData
from mucs_pipeline.data.folder import load_image
from mucs_pipeline.pretrained import clip_text_embeddings

DOWNLOADS = (
    "images: http://images.cocodataset.org/zips/{split}.zip (unzip into <root>/{split}/); "
    "captions: http://images.cocodataset.org/annotations/annotations_trainval2017.zip "
    "(unzip into <root>/annotations/)"
)


def read_captions(path: Path) -> list[tuple[str, list[str]]]:
    """(file name, captions in annotation order) per image that has captions, by image id."""
    ann = json.loads(path.read_text())
    files = {img["id"]: img["file_name"] for img in ann["images"]}
    captions: dict[int, list[str]] = defaultdict(list)
    for a in sorted(ann["annotations"], key=lambda a: a["id"]):
        captions[a["image_id"]].append(a["caption"].strip())
    return [(files[i], captions[i]) for i in sorted(files) if captions[i]]


def _split_files(cfg: DictConfig, split: str) -> tuple[Path, Path]:
    root = Path(cfg.root).expanduser()
    ann, images = root / "annotations" / f"captions_{split}.json", root / split
    if not ann.exists() or not images.is_dir():
        raise FileNotFoundError(
            f"COCO {split} not found under {root} (need {ann} and {images}/). Download "
            + DOWNLOADS.format(split=split)
        )
    return ann, images


def embed_captions(captions: list[str], cfg: DictConfig, cache: Path | None = None) -> torch.Tensor:
    """(N, D) CLIP-Text embeddings of captions, cached under `cache` (default: the dataset's
    cache_dir): how every caption conditions the network (training, prompts, queries)."""
    cache = Path(cfg.cache_dir).expanduser() if cache is None else cache
    key = io.config_hash(cfg.clip_model, cfg.clip_pretrained, captions)
    return io.cached(
        cache / f"clip_text-{key}.pt",
        lambda: clip_text_embeddings(
            captions, cfg.clip_model, cfg.clip_pretrained, cfg.clip_cache_dir
        ),
    )


def _pixels(cfg: DictConfig, split: str, entries: list, images: Path, ann: Path) -> torch.Tensor:
    """Decoded images of a split as uint8, computed once and cached."""

    def decode() -> torch.Tensor:
        x = [
            load_image(images / name, cfg.resolution, 3)
            for name, _ in tqdm(entries, desc=f"decode COCO {split}")
        ]
        return ((torch.stack(x) + 1) * 127.5).round().to(torch.uint8)

    cache = Path(cfg.cache_dir).expanduser()
    return io.cached(
        cache / f"images-{split}-{cfg.resolution}-{io.config_hash(str(ann))}.pt", decode
    )


def load(cfg: DictConfig) -> ImageData:
    """The training split, conditioned on every caption of an image (training draws one per
    access, as the release; `cond` holds caption `caption_index`); generated items take
    test-split captions."""
    cache = Path(cfg.cache_dir).expanduser()
    ann, images = _split_files(cfg, cfg.split)
    entries = read_captions(ann)
    pixels = _pixels(cfg, cfg.split, entries, images, ann)
    options = embed_captions([c for _, caps in entries for c in caps], cfg, cache)  # (M, D)
    counts = torch.tensor([len(caps) for _, caps in entries])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    first = offsets[:-1] + torch.tensor(cfg.caption_index) % counts
    test_ann, _ = _split_files(cfg, cfg.test_split)
    test_captions = [caps[0] for _, caps in read_captions(test_ann)]
    return ImageData(
        x=pixels.float() / 127.5 - 1.0,
        labels=None,
        cond=options[first],
        gen_cond=embed_captions(test_captions, cfg, cache),
        cond_options=options if cfg.sample_captions else None,
        cond_offsets=offsets if cfg.sample_captions else None,
    )


def load_test(cfg: DictConfig) -> ImageData:
    """The test split with each image's first caption (validation losses)."""
    ann, images = _split_files(cfg, cfg.test_split)
    entries = read_captions(ann)
    pixels = _pixels(cfg, cfg.test_split, entries, images, ann)
    cond = embed_captions([caps[0] for _, caps in entries], cfg)
    return ImageData(x=pixels.float() / 127.5 - 1.0, labels=None, cond=cond)
