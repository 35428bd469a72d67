"""What a project declares, checked and compiled into what the platform runs.

A :class:`Project` gathers a project's declarations: its event types by role, surfaces,
entities, extra event fields, features, label heads and models. Constructing one checks
them all; a wrong declaration raises :class:`~streamlearn.project.errors.ProjectError`
with one line that names the definition and what is wrong. From the declarations it
builds

* :attr:`Project.schema`: the contract of its activity events
  (:class:`~streamlearn.streams.catalog.events.EventSchema`);
* :attr:`Project.catalog`: its features
  (:class:`~streamlearn.streams.catalog.features.FeatureCatalog`);
* :attr:`Project.model_catalog`: its models
  (:class:`~streamlearn.streams.catalog.models.ModelCatalog` of
  :class:`~streamlearn.models.definition.ModelDef`, each with the feature spec built from
  the features it names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from streamlearn.models.definition import ModelDef
from streamlearn.models.errors import ModelError
from streamlearn.models.features import FeatureSpec
from streamlearn.models.heads import Head
from streamlearn.models.zoo import DEFAULT_LEARNER, available, check_params
from streamlearn.project.errors import ProjectError
from streamlearn.streams.catalog.events import Entity, Events, EventSchema, Field
from streamlearn.streams.catalog.features import Feature, FeatureCatalog
from streamlearn.streams.catalog.models import ModelCatalog
from streamlearn.streams.errors import CatalogError

#: Row fields every model may read besides features: the request's surface.
SURFACE_FIELD: Final = "surface"
#: A model input named ``ctx_<key>`` reads the request context's ``<key>``.
CONTEXT_PREFIX: Final = "ctx_"
_PROJECT_NAME: Final = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Model:
    """A model a project trains online and serves.

    Parameters
    ----------
    name
        The model's name (topic ``training-examples.<name>``, registry folder, URL).
    head
        The name of a declared :class:`~streamlearn.models.heads.Head` (what it predicts).
    surfaces
        The surfaces it ranks (each surface is ranked by one model).
    features
        Its inputs, by name: declared features, entity keys (``user_id``, ``item_id``,
        …), ``surface``, or ``ctx_<key>`` for a request context value. ``None``: every
        entity key, ``surface`` and every served feature.
    crosses
        Pairs (or more) of categorical inputs hashed together.
    learner, params
        The online learner (``ftrl``, ``fm``, ``deep``, ``river-lr``) and its
        hyper-parameters.
    hash_bits
        Size of the hashed feature space, ``2**hash_bits``.
    description
        What it is for.
    """

    name: str
    head: str
    surfaces: Sequence[str] = ()
    features: Sequence[str] | None = None
    crosses: Sequence[Sequence[str]] = ()
    learner: str = DEFAULT_LEARNER
    params: Mapping[str, Any] = field(default_factory=dict)
    hash_bits: int = 18
    description: str = ""


@dataclass(frozen=True)
class Project:
    """Everything a project declares; checked when constructed.

    Parameters
    ----------
    name
        The project's name (lower_snake_case or dashes).
    events
        Event types by role (:class:`~streamlearn.streams.catalog.events.Events`).
    surfaces
        Where items are shown (and ranked).
    entities
        Entities besides ``user`` and ``item``, each keyed by a declared string field.
    fields
        Extra typed fields of activity events.
    features
        The features the feature processor keeps.
    heads
        The label heads models predict.
    models
        The models trained online and served.
    description
        What the project is.
    """

    name: str
    events: Events
    surfaces: Sequence[str]
    entities: Sequence[Entity] = ()
    fields: Sequence[Field] = ()
    features: Sequence[Feature] = ()
    heads: Sequence[Head] = ()
    models: Sequence[Model] = ()
    description: str = ""
    #: The directory it was loaded from (set by the loader).
    root: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("surfaces", "entities", "fields", "features", "heads", "models"):
            value = getattr(self, name)
            if isinstance(value, str | bytes):
                raise ProjectError(f"project {self.name!r}: expected {name} as a list")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.name, str) or not _PROJECT_NAME.match(self.name):
            raise ProjectError(
                f"project {self.name!r}: expected a name matching {_PROJECT_NAME.pattern}"
            )
        try:
            self.model_catalog  # noqa: B018 (compiles, so every declaration is checked)
        except (CatalogError, ModelError) as exc:
            raise ProjectError(f"project {self.name!r}: {exc}") from None

    @cached_property
    def schema(self) -> EventSchema:
        """The contract of this project's activity events."""
        if not isinstance(self.events, Events):
            raise CatalogError(f"events: expected Events(...), got {self.events!r}")
        return EventSchema(
            self.events, tuple(self.surfaces), tuple(self.entities), tuple(self.fields)
        )

    @cached_property
    def catalog(self) -> FeatureCatalog:
        """This project's features."""
        return FeatureCatalog(tuple(self.features), self.schema)

    @cached_property
    def head_by_name(self) -> dict[str, Head]:
        """The declared heads by name, checked against the event roles."""
        out: dict[str, Head] = {}
        schema = self.schema
        for h in self.heads:
            if not isinstance(h, Head):
                raise CatalogError(f"heads: expected Head(...) declarations, got {h!r}")
            if h.name in out:
                raise CatalogError(f"head {h.name!r}: declared twice")
            wrong = sorted(h.positives - schema.engagements)
            if wrong:
                raise CatalogError(
                    f"head {h.name!r}: expected positives among the engagement types "
                    f"{sorted(schema.engagements)}, got {wrong}"
                )
            out[h.name] = h
        return out

    @cached_property
    def model_catalog(self) -> ModelCatalog:
        """This project's models, compiled."""
        catalog, heads = self.catalog, self.head_by_name
        defs = []
        for m in self.models:
            if not isinstance(m, Model):
                raise CatalogError(f"models: expected Model(...) declarations, got {m!r}")
            defs.append(_compile(m, catalog, heads))
        return ModelCatalog(defs)

    def info(self) -> dict[str, Any]:
        """The declarations as JSON-safe data."""
        return {
            "name": self.name,
            "description": self.description,
            "root": None if self.root is None else str(self.root),
            "events": self.schema.info(),
            "features": self.catalog.info(),
            "models": [d.info() for d in self.model_catalog],
        }


def _compile(m: Model, catalog: FeatureCatalog, heads: Mapping[str, Head]) -> ModelDef:
    """A model's definition: its head resolved and its feature spec built."""
    where = f"model {m.name!r}"
    head = heads.get(m.head) if isinstance(m.head, str) else None
    if head is None:
        raise CatalogError(f"{where}: expected a head among {sorted(heads)}, got {m.head!r}")
    schema = catalog.schema
    unknown_surfaces = sorted(set(m.surfaces) - set(schema.surfaces))
    if isinstance(m.surfaces, str) or unknown_surfaces:
        raise CatalogError(
            f"{where}: expected surfaces among {list(schema.surfaces)}, got "
            f"{m.surfaces if isinstance(m.surfaces, str) else unknown_surfaces}"
        )
    if m.learner not in available():
        raise CatalogError(f"{where}: expected a learner among {available()}, got {m.learner!r}")
    keys = list(schema.entity_keys.values())
    served = {f.name: f for f in catalog.served()}
    names = (
        [*keys, SURFACE_FIELD, *served]
        if m.features is None
        else ([m.features] if isinstance(m.features, str) else list(m.features))
    )
    categorical: list[str] = []
    numeric: list[str] = []
    for name in names:
        if name in keys or name == SURFACE_FIELD or name.startswith(CONTEXT_PREFIX):
            categorical.append(name)
        elif name in served:
            (categorical if served[name].type == "str" else numeric).append(name)
        else:
            try:
                feature = catalog.get(name)
            except KeyError:
                raise CatalogError(
                    f"{where}: input {name!r} is not a declared feature, an entity key "
                    f"({', '.join(keys)}), {SURFACE_FIELD!r} or a {CONTEXT_PREFIX}<key> context "
                    f"value; declared features: {sorted(served)}"
                ) from None
            raise CatalogError(
                f"{where}: feature {feature.name!r} is not a model input (served=False)"
            )
    crosses = tuple(tuple(c) for c in m.crosses)
    for cross in crosses:
        bad = [n for n in cross if n not in categorical]
        if len(cross) < 2 or bad:
            raise CatalogError(
                f"{where}: a cross needs two or more of its categorical inputs "
                f"{categorical}, got {list(cross)}"
            )
    try:
        check_params(m.learner, dict(m.params))
        spec = FeatureSpec(tuple(categorical), tuple(numeric), crosses, hash_bits=m.hash_bits)
        return ModelDef(
            m.name,
            head,
            spec,
            learner=m.learner,
            params=dict(m.params),
            surfaces=tuple(m.surfaces),
            description=m.description,
        )
    except ModelError as exc:
        raise CatalogError(f"{where}: {exc}") from None
