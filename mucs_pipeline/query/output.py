"""What a query run hands an auditor: attributions.csv (each query's top training items
with their files and scores) and one labelled figure per query."""

from __future__ import annotations

import csv
import io as text_io
import re
from pathlib import Path

import torch
from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline.data import ImageData

COLUMNS = ["query", "query_condition", "method", "rank", "train_index", "train_item",
           "train_condition", "score"]  # fmt: skip


def training_items(cfg: DictConfig, data: ImageData) -> tuple[list[str], list[str]]:
    """Each training item's file path (image folders, COCO) or dataset id (`digits[1234]`:
    its index in the dataset's own training split), and its class name or caption."""
    d, index = cfg.dataset, data.source_index()
    captions = None
    if d.name == "folder":
        from mucs_pipeline.data.folder import files

        paths = files(d)[0]
        ids = [str(paths[i]) for i in index]
    elif d.name == "coco":
        from mucs_pipeline.data.coco import read_captions

        root = Path(d.root).expanduser()
        entries = read_captions(root / "annotations" / f"captions_{d.split}.json")
        ids = [str(root / d.split / entries[i][0]) for i in index]
        captions = [entries[i][1][d.caption_index % len(entries[i][1])] for i in index]
    else:  # in-memory datasets: an index into the dataset's own split
        ids = [f"{d.name}[{i}]" for i in index]
    if captions is None:
        names = data.class_names or []
        labels = data.labels.tolist() if data.labels is not None else [None] * len(data)
        captions = ["" if y is None else (names[y] if names else str(y)) for y in labels]
    return ids, captions


def records(
    cfg: DictConfig, data: ImageData, target: dict, scores: torch.Tensor, method: str, top_k: int
) -> list[dict]:
    """One record per (query, rank) for the `top_k` highest-scored training items."""
    from mucs_pipeline.evaluation.protocol import top_k_indices

    ids, conditions = training_items(cfg, data)
    top = top_k_indices(scores, min(top_k, scores.shape[1]), cfg.seed)
    out = []
    for i, name in enumerate(target["names"]):
        query_condition = target["conditions"][i] if target["conditions"] else ""
        for rank, j in enumerate(top[i].tolist(), start=1):
            out.append({
                "query": name, "query_condition": query_condition, "method": method,
                "rank": rank, "train_index": j, "train_item": ids[j],
                "train_condition": conditions[j], "score": float(scores[i, j]),
            })  # fmt: skip
    return out


def write_csv(rows: list[dict], path: Path) -> None:
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    io.atomic_write_text(path, buffer.getvalue())


def figure_name(i: int, query: str) -> str:
    """query<i>_<file stem>.png, with characters other than letters, digits, - and _ as _."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(query).stem)[:40]
    return f"query{i:03d}_{stem}.png"


def figures(data: ImageData, target: dict, rows: list[dict], method: str, folder: Path) -> list:
    """One figure per query: the query, then its top training items with rank and score."""
    from mucs_pipeline.evaluation.figures import save_grid

    paths = []
    for i, name in enumerate(target["names"]):
        mine = [r for r in rows if r["query"] == name]
        top = torch.tensor([r["train_index"] for r in mine], dtype=torch.long)
        condition = target["conditions"][i] if target["conditions"] else ""
        captions = ["query", *[f"#{r['rank']} z{r['train_index']}\n{r['score']:.4g}" for r in mine]]
        paths.append(folder / figure_name(i, name))
        save_grid(
            [torch.cat([target["images"][i : i + 1], data.x[top]])], paths[-1], [method],
            [captions],
            title=f"{name}" + (f" ({condition})" if condition else "")
            + f": its top-{len(mine)} training images by {method}",
        )  # fmt: skip
    return paths
