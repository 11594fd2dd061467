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

from mucs_pipeline import lds_units
from mucs_pipeline.keys import generate_recipe, pretrain_recipe

if TYPE_CHECKING:
    from mucs_pipeline.layout import Layout

Unit = tuple[str, "str | None"]  # (stage, method); method None for a stage shared by all

# Which units of an upstream stage a unit of method m reads (see Read).
SHARED, OWN, EVALUATED, COMPONENTS, ALL = "shared", "own", "evaluated", "components", "all"


@dataclass(frozen=True)
class Read:
    """An upstream stage a stage reads: its shared unit (SHARED), the unit of the same
    method (OWN), the units of every evaluated method, random included (EVALUATED), those
    of the method's ensemble components (COMPONENTS) or all its units (ALL); only where
    `when` holds, if given. Only units the upstream stage has are read: a stage that the
    config leaves out (LDS's held-out queries when only generated items are asked for)
    has none."""

    stage: str
    which: str = SHARED
    when: Callable[[Layout], bool] | None = None  # read only where this holds

    def units(self, lay: Layout, method: str | None) -> list[Unit]:
        if self.when is not None and not self.when(lay):
            return []
        has = lay.units(self.stage)
        if self.which == SHARED:
            wanted = [None]
        elif self.which == OWN:
            wanted = [method]
        elif self.which == EVALUATED:
            wanted = lay.methods
        elif self.which == COMPONENTS:
            wanted = lay.components(method)
        else:
            wanted = has
        return [(self.stage, m) for m in wanted if m in has]


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


def _attribute(name: str, items: str, units=_attributed) -> Stage:
    """A stage scoring the items of stage `items` with every method (attribute: the
    generated items; lds_attribute: LDS's held-out queries)."""
    return Stage(
        name,
        key=lambda lay, m: (
            lay.key(items),
            lay.key("null_loss"),
            lay.method_cfg(m),
            pretrain_recipe(lay.cfg),
            lay.bf16_scores(m),
            *[lay.key(name, c) for c in lay.components(m)],
            # F1, which generate's key holds for the attribute stage (kept as it was)
            *([] if items == "generate" else [lay.key("pretrain")]),
        ),
        reads=(Read(items), Read("null_loss"), Read("pretrain"), Read(name, COMPONENTS)),
        units=units,
    )


def _if_lds(units, queries: str | None = None):
    """`units` where lds=on asks for the query set `queries` (None: any), else none."""

    def of(lay: Layout) -> list[str | None]:
        wanted = lds_units.query_sets(lay.cfg)
        return units(lay) if wanted and (queries is None or queries in wanted) else []

    return of


def _asks(queries: str) -> Callable[[Layout], bool]:
    return lambda lay: queries in lds_units.query_sets(lay.cfg)


# The stage whose units hold the methods' scores of each LDS query set.
LDS_SCORES = {"generated": "attribute", "heldout": "lds_attribute"}


def lds_queries(lay: Layout) -> list[tuple[str, str]]:
    """(query set, the stage holding its items) of the query sets LDS is measured on."""
    return [(q, "generate" if q == "generated" else "lds_heldout") for q in
            lds_units.query_sets(lay.cfg)]  # fmt: skip


GRAPH = (
    Stage("pretrain", key=lambda lay, m: (*_model(lay), pretrain_recipe(lay.cfg))),
    Stage(
        "generate",
        key=lambda lay, m: (lay.key("pretrain"), generate_recipe(lay.cfg)),
        reads=(Read("pretrain"),),
    ),
    Stage("null_loss", key=lambda lay, m: (*_model(lay), lay.cfg.null_loss)),
    _attribute("attribute", "generate"),
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
    # The linear datamodeling score (lds=on, conf/lds/on.yaml): models trained on random
    # subsets, the queries' losses under each, and each method's rank correlation.
    Stage(
        "lds_subsets",
        key=lambda lay, m: (
            lay.cfg.dataset,
            lay.cfg.seed,
            lay.cfg.lds.num_subsets,
            lay.cfg.lds.alpha,
            lay.cfg.lds.split,
        ),
        units=_if_lds(lambda lay: [None]),
    ),
    Stage(
        "lds_heldout",
        key=lambda lay, m: (
            lay.cfg.dataset,
            lay.cfg.seed,
            lay.cfg.lds.num_heldout,
            lay.cfg.lds.split,
        ),
        units=_if_lds(lambda lay: [None], "heldout"),
    ),
    _attribute("lds_attribute", "lds_heldout", units=_if_lds(_attributed, "heldout")),
    # A unit draws its own subsets (subset s from its own stream, whatever S is), so that
    # the units of S = 32 are the first units of S = 64: growing S trains only the rest.
    Stage(
        "lds_train",
        key=lambda lay, m: (
            *_model(lay),
            lds_units.recipe(lay.cfg),
            lds_units.steps(lay.cfg),
            lay.cfg.lds.common_random_numbers,
            lay.cfg.lds.alpha,
            lay.cfg.lds.split,
            lds_units.unit_models(lay.cfg, m),
        ),
        units=_if_lds(lambda lay: lds_units.units(lay.cfg)),
    ),
    # One unit per lds_train unit: its models' losses of the queries, as soon as it is
    # trained (a larger S measures only the new models).
    Stage(
        "lds_outputs",
        key=lambda lay, m: (
            lay.key("lds_train", m),
            [lay.key(items) for _, items in lds_queries(lay)],
            lay.cfg.diffusion,
            lay.cfg.lds.bank.levels,  # not its batch size: how draws are grouped
            lay.cfg.lds.bank.noises,
        ),
        reads=(
            Read("lds_train", OWN),
            Read("generate", when=_asks("generated")),
            Read("lds_heldout"),
        ),
        units=_if_lds(lambda lay: lds_units.units(lay.cfg)),
    ),
    Stage(
        "lds",
        key=lambda lay, m: (
            [lay.key("lds_outputs", u) for u in lay.units("lds_outputs")],
            lay.key("lds_subsets"),
            [lay.key(LDS_SCORES[q], m) for q, _ in lds_queries(lay)],
            lay.cfg.lds.confidence,
            lay.cfg.lds.resamples,
        ),
        reads=(
            Read("lds_outputs", ALL),
            Read("lds_subsets"),
            Read("attribute", OWN, when=_asks("generated")),
            Read("lds_attribute", OWN),
        ),
        units=_if_lds(lambda lay: lay.methods),
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
