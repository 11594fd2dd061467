"""The stage graph, declared once: what each stage's key hashes and which units it reads.

A stage may read only the artifacts it declares (`Layout.require` and `Layout.manifest`
refuse any other while one of its units runs), and its key covers every unit it reads:
the key of each declared read enters its key, directly or through another key. A key may
hash more than the stage reads: retraining replays pretraining's recipe and init, so its
key holds pretraining's key without reading F1; regeneration redraws the generate
stage's seeds, so its key holds that key without reading the generated items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mucs_pipeline.keys import generate_recipe, pretrain_recipe

if TYPE_CHECKING:
    from mucs_pipeline.layout import Layout

Unit = tuple[str, "str | None"]  # (stage, method); method None for a stage shared by all

# Which units of an upstream stage a unit of method m reads (see Read).
SHARED, OWN, EVALUATED, COMPONENTS = "shared", "own", "evaluated", "components"


@dataclass(frozen=True)
class Read:
    """An upstream stage a stage reads: its shared unit (SHARED), the unit of the same
    method (OWN), the units of every evaluated method, random included (EVALUATED), or
    those of the method's ensemble components (COMPONENTS)."""

    stage: str
    which: str = SHARED

    def units(self, lay: Layout, method: str | None) -> list[Unit]:
        if self.which == SHARED:
            return [(self.stage, None)]
        if self.which == OWN:
            return [(self.stage, method)]
        if self.which == EVALUATED:
            return [(self.stage, m) for m in lay.methods]
        return [(self.stage, c) for c in lay.components(method)]


@dataclass(frozen=True)
class Stage:
    """One stage of the graph.

    `key`: what the unit's key hashes (its config and the keys it is built from), so that
    another method reuses every unit it shares with an earlier run; `reads`: the upstream
    stages whose artifacts it reads; `units`: its units in order; `prefix`: its folder
    name's prefix, before the key.
    """

    name: str
    key: Callable[[Layout, str | None], tuple]
    reads: tuple[Read, ...] = ()
    units: Callable[[Layout], list[str | None]] = lambda lay: [None]
    prefix: Callable[[Layout, str | None], str | None] = lambda lay, method: method


def _model(lay: Layout) -> tuple:
    c = lay.cfg
    return (c.dataset, c.model, c.diffusion, c.seed)


def _attributed(lay: Layout) -> list[str | None]:
    """Every method's unit, an ensemble's components first (shared with runs of them)."""
    return list(dict.fromkeys(u for m in lay.methods for u in [*lay.components(m), m]))


GRAPH = (
    Stage("pretrain", key=lambda lay, m: (*_model(lay), pretrain_recipe(lay.cfg))),
    Stage(
        "generate",
        key=lambda lay, m: (lay.key("pretrain"), generate_recipe(lay.cfg)),
        reads=(Read("pretrain"),),
    ),
    Stage("null_loss", key=lambda lay, m: (*_model(lay), lay.cfg.null_loss)),
    Stage(
        "attribute",
        key=lambda lay, m: (
            lay.key("generate"),
            lay.key("null_loss"),
            lay.method_cfg(m),
            pretrain_recipe(lay.cfg),
            lay.bf16_scores(m),
            *[lay.key("attribute", c) for c in lay.components(m)],
        ),
        reads=(
            Read("generate"),
            Read("null_loss"),
            Read("pretrain"),
            Read("attribute", COMPONENTS),
        ),
        units=_attributed,
    ),
    Stage(
        "retrain",
        key=lambda lay, m: (
            lay.key("attribute", m),
            lay.key("pretrain"),
            lay.cfg.evaluate.k_fraction,
            lay.cfg.retrain,
        ),
        reads=(Read("attribute", OWN),),
        units=lambda lay: lay.methods,
    ),
    Stage(
        "regenerate",
        key=lambda lay, m: (lay.key("retrain", m), lay.key("generate")),
        reads=(Read("retrain", OWN),),
        units=lambda lay: lay.methods,
    ),
    Stage(
        "evaluate",
        key=lambda lay, m: (
            [lay.key("regenerate", x) for x in lay.methods],
            lay.cfg.metric,
            lay.cfg.evaluate,
        ),
        reads=(
            Read("regenerate", EVALUATED),
            Read("generate"),
            Read("retrain", EVALUATED),  # how many items each removal took
            Read("attribute", EVALUATED),  # the method's own diagnostics (items at their cap)
            Read("pretrain"),  # F1's fit, recorded by the pretrain unit
            Read("null_loss"),
        ),
        prefix=lambda lay, m: lay.cfg.method.name,  # one evaluation per evaluated method
    ),
)
STAGES = [stage.name for stage in GRAPH]
STAGE = {stage.name: stage for stage in GRAPH}

# Query mode (+query=folder): the graph up to the attribute stage, with the user's images
# standing in for the generated items (ITEMS); nothing is generated or retrained.
ITEMS = "generate"


def needed(stage: str) -> list[str]:
    """`stage` and every stage it reads, directly or not, in the graph's order."""
    todo, found = [stage], {stage}
    while todo:
        for read in STAGE[todo.pop()].reads:
            if read.stage not in found:
                found.add(read.stage)
                todo.append(read.stage)
    return [s for s in STAGES if s in found]


QUERY_STAGES = [s for s in needed("attribute") if s != ITEMS]  # what `stages=` may pick
