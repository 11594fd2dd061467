"""Attribute query images: F1 (pretrained, or `pretrain.init_from`), L_null, the method's
scores of the queries, then the table and figures. Nothing is generated or retrained."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from omegaconf import DictConfig

from mucs_pipeline import artifacts as io
from mucs_pipeline import plan as cost
from mucs_pipeline.config import derived
from mucs_pipeline.data import ImageData
from mucs_pipeline.graph import ITEMS, QUERY_STAGES, Unit, needed
from mucs_pipeline.layout import Layout
from mucs_pipeline.query import output
from mucs_pipeline.query.inputs import Queries, captions_for, load_queries, query_files
from mucs_pipeline.runner import run_unit
from mucs_pipeline.stages import common

log = logging.getLogger(__name__)


class QueryLayout(Layout):
    """The run's layout with the queries in place of the generated items: one unit under
    <run>/query/<key of their content>/ whose items.pt has the generate stage's structure,
    so the attribute stage and every method read them unchanged. No random baseline: there
    is no leave-k-out evaluation to compare against."""

    def __init__(self, cfg: DictConfig, queries: Queries):
        super().__init__(cfg)
        self.methods = [cfg.method.name]
        self.queries_key = io.config_hash("query", queries.digest())

    def key(self, stage: str, method: str | None = None) -> str:
        return self.queries_key if stage == ITEMS else super().key(stage, method)

    def dir(self, stage: str, method: str | None = None) -> Path:
        if stage == ITEMS:
            return self.root / "query" / self.queries_key
        return super().dir(stage, method)

    def name(self, stage: str, method: str | None = None) -> str:
        return "query" if stage == ITEMS else super().name(stage, method)

    def upstream(self, stage: str, method: str | None) -> list[Unit]:
        return [] if stage == ITEMS else super().upstream(stage, method)


def attribute_queries(cfg: DictConfig, data: ImageData, queries: Queries) -> tuple[Path, list]:
    """Score `queries` with cfg.method against the training set and write attributions.csv
    (the top `query.top_k` of each) and one figure per query; (their folder, the CSV's
    rows). Units finished by an earlier run (F1, L_null, the same queries' scores) are
    reused."""
    layout = QueryLayout(cfg, queries)
    method = cfg.method.name

    def save(folder: Path) -> dict:
        io.atomic_save(queries.items(), folder / "items.pt")
        return {"num_items": len(queries.names)}

    for stage in needed("attribute"):  # the graph up to the scores, queries for items
        if stage == ITEMS:
            if "attribute" in cfg.stages:
                run_unit(layout, ITEMS, None, save)
        elif stage in cfg.stages:
            importlib.import_module(f"mucs_pipeline.stages.{stage}").run(cfg, layout)
    if "attribute" not in cfg.stages:
        return layout.dir(ITEMS), []
    target = io.load(layout.require(ITEMS) / "items.pt")["target"]
    scores = io.load(layout.require("attribute", method) / "scores.pt")["scores"]
    rows = output.records(cfg, data, target, scores, method, cfg.query.top_k)
    # Named as the attribute unit is (method-key): two settings of a method keep their own.
    folder = layout.dir(ITEMS) / layout.dir("attribute", method).name
    folder.mkdir(exist_ok=True)
    output.write_csv(rows, folder / "attributions.csv")
    for old in folder.glob("query*.png"):  # another top_k's figures
        old.unlink()
    output.figures(data, target, rows, method, folder)
    return folder, rows


def plan(cfg: DictConfig, data: ImageData, queries: Queries) -> list[dict]:
    """plan=true: the units a query run would run or skip, with their cost; computes nothing."""
    cfg = derived(cfg, {"generate": {"num_items": len(queries.names), "num_controls": 0}})
    layout, rate = QueryLayout(cfg, queries), cost.measure(cfg, data)
    attributes = "attribute" in cfg.stages
    units = [
        (stage, method)
        for stage in needed("attribute")
        if stage in cfg.stages or (stage == ITEMS and attributes)
        for method in layout.units(stage)
    ]
    rows, conditional = [], data.cond is not None
    for stage, method in units:
        free = (0, 0) if stage == ITEMS else None  # the queries are read, not generated
        rows.append(cost.unit_row(cfg, layout, stage, method, len(data), conditional, rate, free))
        rows[-1]["stage"] = "query" if stage == ITEMS else stage
    print(f"Plan for {len(queries.names)} queries (plan=true: nothing is computed):\n"
          + cost.render(rows, rate))  # fmt: skip
    return rows


def run(cfg: DictConfig) -> dict:
    """`python -m mucs_pipeline +query=folder query.root=...`: the CSV and the figures."""
    root, files = query_files(cfg.query)  # an empty folder or a missing caption: before compute
    captions = captions_for(cfg.query, root, files) if cfg.dataset.name == "coco" else None
    data = common.dataset(cfg)
    queries = load_queries(cfg, root, files, data, captions=captions)
    if cfg.plan:
        return {"plan": plan(cfg, data, queries)}
    log.info("attributing %d query images from %s with %s", len(files), root, cfg.method.name)
    folder, rows = attribute_queries(cfg, data, queries)
    if not rows:
        done = [s for s in QUERY_STAGES if s in cfg.stages]
        print(f"\nStopped after {', '.join(done)} (stages={list(cfg.stages)}): no attribution")
        return {"num_queries": 0, "folder": str(folder)}
    best = [r for r in rows if r["rank"] == 1]
    lines = [f"  {r['query']}: #1 {r['train_item']} ({r['score']:.4g})" for r in best[:10]]
    more = f"\n  ... and {len(best) - 10} more" if len(best) > 10 else ""
    print(
        f"\nTop training images of {len(best)} queries by {cfg.method.name}:\n"
        + "\n".join(lines) + more
        + f"\n{folder / 'attributions.csv'} (top {cfg.query.top_k} each), "
        f"figures {folder}/query*.png"
    )  # fmt: skip
    return {"num_queries": len(best), "folder": str(folder)}
