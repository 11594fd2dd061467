"""The user's query images and their conditions, shaped as the items the attribute stage
reads, so that every method attributes them as it attributes generated items."""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image

from mucs_pipeline.data.base import DatasetError, ImageData, one_hot
from mucs_pipeline.data.folder import EXTENSIONS, images_under, load_image

log = logging.getLogger(__name__)


@dataclass
class Queries:
    """n query images at the training images' size, with what the network is conditioned on."""

    names: list[str]  # file paths relative to query.root, or "image <i>"
    images: torch.Tensor  # (n, C, H, W) in [-1, 1]
    labels: torch.Tensor | None = None  # (n,) class ids (class-conditional data)
    cond: torch.Tensor | None = None  # (n, D) condition vectors (None: unconditional data)
    conditions: list[str] | None = None  # each query's class name or caption, for the table

    def items(self) -> dict:
        """The generate stage's items.pt structure: the queries are the attributed items."""
        none = {"seeds": torch.zeros(0, dtype=torch.long), "labels": None, "cond": None}
        target = {"seeds": torch.arange(len(self.names)), "labels": self.labels,
                  "cond": self.cond, "images": self.images}  # fmt: skip
        control = {**none, "images": self.images[:0]}
        return {"target": {**target, "names": self.names, "conditions": self.conditions},
                "control": control}  # fmt: skip

    def digest(self) -> str:
        """A hash of the queries' content: what their unit's key hashes."""
        h = hashlib.sha256()
        for t in (self.images, self.cond, self.labels):
            h.update(b"-" if t is None else t.contiguous().numpy().tobytes())
        h.update(repr((self.names, self.conditions)).encode())
        return h.hexdigest()


def query_files(q: DictConfig) -> tuple[Path, list[Path]]:
    """query.root (a folder, or one image) and the images it holds, or DatasetError."""
    if q.get("root") is None:
        raise DatasetError("query.root is not set: pass query.root=/path/to/images to attribute")
    root = Path(q.root).expanduser()
    if root.is_file():
        return root.parent, [root]
    if not root.is_dir():
        raise DatasetError(f"query.root={str(root)!r}: no such folder or image file")
    found = images_under(root)
    if not found:
        raise DatasetError(
            f"query.root={str(root)!r} holds no images ({', '.join(sorted(EXTENSIONS))}); "
            "put the images to attribute there"
        )
    return root, found


def _read_caption_file(path: Path) -> dict[str, str]:
    """file -> caption from a CSV of `file,caption` rows (a header row is skipped)."""
    if not path.is_file():
        raise DatasetError(f"query.captions={str(path)!r}: no such CSV file (rows: file,caption)")
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["file", "caption"]:
        rows = rows[1:]
    bad = [r for r in rows if len(r) < 2 or not r[1].strip()]
    if bad:
        raise DatasetError(f"query.captions={str(path)!r}: row {bad[0]} is not `file,caption`")
    return {r[0].strip(): r[1].strip() for r in rows}


def captions_for(q: DictConfig, root: Path, files: list[Path]) -> list[str]:
    """Each query's caption (COCO): `query.captions` as a list in file order, or a CSV."""
    names = [p.relative_to(root).as_posix() for p in files]
    given = q.get("captions")
    how = (
        "set query.captions=[...] (one caption per image, in file-name order) or "
        "query.captions=/path/to/captions.csv (rows: file,caption)"
    )
    if given is None:
        raise DatasetError(f"query {names[0]}: COCO queries need a caption; {how}")
    if isinstance(given, (list, ListConfig)):
        captions = [str(c).strip() for c in given]
        if len(captions) < len(names) or not all(captions[: len(names)]):
            first = next(i for i in range(len(names)) if i >= len(captions) or not captions[i])
            raise DatasetError(
                f"query {names[first]}: no caption ({len(captions)} captions for "
                f"{len(names)} images); {how}"
            )
        return captions[: len(names)]
    table = _read_caption_file(Path(str(given)).expanduser())
    captions = [table.get(n, table.get(Path(n).name)) for n in names]
    if None in captions:
        missing = names[captions.index(None)]
        raise DatasetError(f"query {missing}: no row in query.captions={str(given)!r}; {how}")
    return captions


def _class_names(data: ImageData) -> list[str]:
    return data.class_names or [str(i) for i in range(data.cond_dim)]


def _class_id(value, data: ImageData, where: str) -> int:
    """A class given by name (or id) as the data's class id."""
    names = _class_names(data)
    if str(value) in names:
        return names.index(str(value))
    if isinstance(value, int) and 0 <= value < len(names):
        return value
    raise DatasetError(f"{where}: {value!r} is not a class of the dataset (classes: {names})")


def labels_for(q: DictConfig, root: Path, files: list[Path]) -> list[str]:
    """Each query's class: `query.label`, else the name of the subfolder it is in."""
    if q.get("label") is not None:
        return [str(q.label)] * len(files)
    labels = []
    for path in files:
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            raise DatasetError(
                f"query {path}: the dataset is class-conditional and this image has no class; "
                "put each image in a subfolder named after its class, or set query.label"
            )
        labels.append(parts[0])
    return labels


def load_queries(
    cfg: DictConfig, root: Path, files: list[Path], data: ImageData, *, labels=None, captions=None
) -> Queries:
    """The images at `files`, loaded as training images are (center-cropped, resized to
    the training resolution, with a warning when they are not that size already); their
    classes `labels`, else as `labels_for` finds them."""
    side, channels = data.x.shape[-1], data.x.shape[1]
    sizes = {}
    for path in files:
        try:
            with Image.open(path) as img:
                sizes[path] = img.size
        except OSError as err:
            raise DatasetError(f"query {path}: not a readable image ({err})") from None
    other = [p for p in files if sizes[p] != (side, side)]
    if other:
        w, h = sizes[other[0]]
        log.warning(
            "%d of %d query images are not %dx%d (e.g. %s, %dx%d): center-cropped and resized "
            "to %dx%d as the training images are",
            len(other), len(files), side, side, other[0].name, w, h, side, side,
        )  # fmt: skip
    images = torch.stack([load_image(p, side, channels) for p in files])
    names = [p.relative_to(root).as_posix() for p in files]
    if data.cond is None:
        unusable(cfg, {"query.label": cfg.query.get("label"),
                       "query.captions": cfg.query.get("captions")})  # fmt: skip
        if any(len(p.relative_to(root).parts) > 1 for p in files):
            log.info("the dataset is unconditional: the query subfolders' names are not used")
    elif labels is None and captions is None:
        labels = labels_for(cfg.query, root, files)
    return make_queries(cfg, data, names, images, labels=labels, captions=captions)


def unusable(cfg: DictConfig, given: dict) -> None:
    """DatasetError when a query condition (a class or caption) is given for a dataset
    whose network takes none: the user expects it to count, and it cannot."""
    given = {k: v for k, v in given.items() if v is not None}
    if given:
        name = next(iter(given))
        raise DatasetError(
            f"{name} is set, but the {cfg.dataset.name} model is unconditional "
            f"(dataset.conditional=false: it takes no class or caption); drop {name}, or "
            "attribute with a conditional model"
        )


def make_queries(
    cfg: DictConfig, data: ImageData, names: list[str], images: torch.Tensor,
    *, labels: list | None = None, captions: list[str] | None = None,
) -> Queries:  # fmt: skip
    """Queries with the condition their dataset needs: none, a class (name or id) or, for
    COCO, a caption (its CLIP-Text embedding, as the training captions')."""
    if data.cond is None:
        unusable(cfg, {"labels": labels, "captions": captions})
        return Queries(names, images)
    if cfg.dataset.name == "coco":
        if captions is None or len(captions) != len(names):
            raise DatasetError(f"{len(names)} COCO queries need one caption each")
        from mucs_pipeline.data.coco import embed_captions

        return Queries(names, images, None, embed_captions(captions, cfg.dataset), captions)
    if labels is None or len(labels) != len(names):
        raise DatasetError(f"{len(names)} queries of a class-conditional dataset need a class each")
    ids = [
        _class_id(v, data, f"the class of query {n}") for v, n in zip(labels, names, strict=True)
    ]
    texts = [_class_names(data)[i] for i in ids]
    ids_t = torch.tensor(ids, dtype=torch.long)
    return Queries(names, images, ids_t, one_hot(ids_t, data.cond_dim), texts)
