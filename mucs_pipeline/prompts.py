"""Prompt mode for COCO: the attributed items are generated from the user's own captions
(`generate.captions=[...]`, or a text file of one caption a line) instead of seeded
test-split captions, through the full pipeline, so the leave-k-out check also answers
for a user's prompt. The control items keep their seeded test-split captions."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, open_dict

from mucs_pipeline.errors import ConfigError


def apply_prompts(cfg: DictConfig) -> None:
    """Resolve `generate.captions` in place (a run's first steps): a file's lines become
    the list (so the keys hash the captions, not the file's name) and
    `generate.num_items` their number. Nothing to do without captions."""
    given = cfg.generate.get("captions")
    if given is None:
        return
    if cfg.dataset.name != "coco":
        raise ConfigError([
            f"generate.captions: captions condition a caption-conditioned model; "
            f"dataset={cfg.dataset.name} is not one (expected dataset=coco)"
        ])  # fmt: skip
    if isinstance(given, (list, ListConfig)):
        captions = [str(c).strip() for c in given]
    else:
        path = Path(str(given)).expanduser()
        if not path.is_file():
            raise ConfigError([f"generate.captions={given!r}: no such file (one caption a line)"])
        captions = [line.strip() for line in path.read_text().splitlines()]
    captions = [c for c in captions if c]
    if not captions:
        raise ConfigError([f"generate.captions={given!r}: expected at least one caption"])
    with open_dict(cfg):
        cfg.generate.captions = captions
        cfg.generate.num_items = len(captions)


def embed_prompts(cfg: DictConfig) -> torch.Tensor:
    """The captions' CLIP-Text embeddings, as the training captions' (cached)."""
    from mucs_pipeline.data.coco import embed_captions

    return embed_captions(list(cfg.generate.captions), cfg.dataset)
