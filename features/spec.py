"""The feature spec: one definition that the online store and the offline builder both compute.

A spec (YAML, see `docs/features.md`) names entities (any event field can key one), enrichments
(IP -> country and network type), and features of three families:

* per-event: `field`, `compare` (eq/ne of two fields or features), `in`, `hour_of_day`,
  `day_of_week`;
* windowed aggregations per entity: `count`, `sum`, `mean`, `max`, `distinct`, `share`, each
  with a `where` filter (field -> value or list of values) and a `window`;
* state per entity: `time_since_last`, `time_since_first`, `last_value`; and `ratio` of two
  features or fields.

Point-in-time semantics, identical on both sides: the features of an event at time `ts` use only
events with time `< ts` (ties excluded), inside the window `[floor((ts - window) / hop) * hop, ts)`
where `hop` defaults to window / 12 (a window is 0-8% longer than named: the price of bucketed
online storage, paid identically offline). An entity idle for its `ttl` starts from nothing.

Aggregations compile to *primitives* (count, sum, max, distinct, first, last, last value per
entity, filter and hop), which is what the online store keeps in Redis. The spec's version is a
hash of its validated content; `SpecPlan` is the compiled form both sides use.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.errors import InvalidSpec
from features.events import ALL_FIELDS

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

Scalar = str | int | float | bool


def parse_duration(text: str) -> int:
    """Milliseconds for '500ms', '90s', '10m', '1h', '7d', '2w'."""
    match = _DURATION.match(str(text).strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"duration {text!r} must look like 10m, 1h, 24h, 7d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


WINDOWED = ("count", "sum", "mean", "max", "distinct", "share")
STATEFUL = ("time_since_last", "time_since_first", "last_value")
PER_EVENT = ("field", "compare", "in", "hour_of_day", "day_of_week")
KINDS = WINDOWED + STATEFUL + PER_EVENT + ("ratio",)
NEEDS_FIELD = ("sum", "mean", "max", "distinct", "last_value", "field")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entity(_Strict):
    key: str
    ttl: str = "90d"


class Enrichment(_Strict):
    """`ip_geo`: the country and network type of the address in `field`, resolved from the full
    address; with `keep: truncated` the address itself is then cut to its network (IPv4 /24,
    IPv6 /48 by default) before anything keeps or counts it, online and offline alike."""

    kind: Literal["ip_geo"]
    field: str
    country: str
    network: str
    keep: Literal["full", "truncated"] = "full"
    ipv4_prefix: int = Field(24, ge=8, le=32)
    ipv6_prefix: int = Field(48, ge=16, le=128)


class FeatureDef(_Strict):
    name: str
    kind: Literal[
        "count", "sum", "mean", "max", "distinct", "share",
        "time_since_last", "time_since_first", "last_value",
        "field", "compare", "in", "hour_of_day", "day_of_week", "ratio",
    ]  # fmt: skip
    description: str = ""
    entity: str | None = None
    field: str | None = None
    where: dict[str, Scalar | list[Scalar]] = {}
    match: dict[str, Scalar | list[Scalar]] = {}
    window: str | None = None
    hop: str | None = None
    op: Literal["eq", "ne"] | None = None
    a: str | None = None
    b: str | None = None
    values: list[Scalar] = []
    hidden: bool = False

    @model_validator(mode="after")
    def _shape(self) -> FeatureDef:
        if not _NAME.match(self.name):
            raise ValueError("name must be lower_snake_case, at most 63 characters")
        aggregate = self.kind in WINDOWED or self.kind in STATEFUL
        if aggregate and not self.entity:
            raise ValueError(f"kind {self.kind} needs an 'entity'")
        if not aggregate and (self.entity or self.where):
            raise ValueError(f"kind {self.kind} takes no 'entity' or 'where'")
        if self.kind in WINDOWED:
            if not self.window:
                raise ValueError(f"kind {self.kind} needs a 'window'")
            window = parse_duration(self.window)
            if self.hop and not 0 < parse_duration(self.hop) <= window:
                raise ValueError("hop must be positive and at most the window")
        elif self.window or self.hop:
            raise ValueError(f"kind {self.kind} takes no 'window'")
        if self.kind in NEEDS_FIELD and not self.field:
            raise ValueError(f"kind {self.kind} needs a 'field'")
        if self.kind == "share" and not self.match:
            raise ValueError("kind share needs a 'match' filter")
        if self.kind == "compare" and not (self.op and self.a and self.b):
            raise ValueError("kind compare needs 'op' (eq or ne), 'a' and 'b'")
        if self.kind == "ratio" and not (self.a and self.b):
            raise ValueError("kind ratio needs 'a' and 'b'")
        if self.kind == "in" and not (self.a and self.values):
            raise ValueError("kind in needs 'a' and 'values'")
        return self


class SpecModel(_Strict):
    name: str
    description: str = ""
    decimals: int = 6
    enrich: list[Enrichment] = []
    entities: dict[str, Entity]
    features: list[FeatureDef]


@dataclass(frozen=True)
class Primitive:
    """What the online store keeps per entity; `kind` is c(ount) s(um) m(ax) d(istinct),
    f(irst time), l(ast time) or v (last value)."""

    pid: int
    entity: str
    kind: str
    field: str | None
    where: tuple[tuple[str, tuple[str, ...]], ...]
    hop: int  # ms; 0 for the non-windowed kinds
    horizon: int  # ms: the largest window read plus one hop (older data is unreachable)


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str
    hidden: bool
    definition: FeatureDef
    window: int = 0
    hop: int = 0
    prims: tuple[int, ...] = ()  # primitive ids, meaning depends on kind


@dataclass(frozen=True)
class SpecPlan:
    model: SpecModel
    version: str
    primitives: tuple[Primitive, ...]
    features: tuple[Feature, ...]
    entity_ttl: dict[str, int]
    scale: int
    output: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def entity_keys(self) -> dict[str, str]:
        return {name: ent.key for name, ent in self.model.entities.items()}

    def source_fields(self) -> set[str]:
        """Event fields the spec reads (beyond the envelope), for checking a log."""
        fields = {e.key for e in self.model.entities.values()}
        fields |= {e.field for e in self.model.enrich}
        enriched = {x for e in self.model.enrich for x in (e.country, e.network)}
        names = {f.name for f in self.features}
        for f in self.features:
            d = f.definition
            fields |= set(d.where) | set(d.match)
            for ref in (d.field, d.a, d.b):
                if ref and ref not in names:
                    fields.add(ref)
        return fields - enriched - {"ts", "type", "event_id"}

    def text_features(self) -> frozenset[str]:
        """The features whose values are text: the last value of a field the event schemas
        (`features.events`) hold as text, or of an enrichment's country or network
        (`account_plan`, `account_country`...). A policy's condition, which compares a number,
        cannot name one. (A `field` feature reads its field as a number: NaN for text.)"""
        text = {x for e in self.model.enrich for x in (e.country, e.network)}
        text |= {name for name, f in ALL_FIELDS.items() if f.kind == "str"}
        return frozenset(
            f.name for f in self.features if f.kind == "last_value" and f.definition.field in text
        )


# Tuples, not `bool | np.bool_`: a union is built anew at each call (Python 3.11).
_FLAGS = (bool, np.bool_)
_NUMBERS = (int, float, np.integer, np.floating)


def encode_value(value: Any) -> str | None:
    """The one text form of a field value used for filters, comparisons, distinct counts and
    stored last values, online and offline alike (so 2 and 2.0 and True and 1 agree)."""
    if value is None:
        return None
    if isinstance(value, _FLAGS):
        return "1" if value else "0"
    if isinstance(value, _NUMBERS):
        number = float(value)
        return None if number != number else repr(number)
    return str(value)


def canonical_where(*filters: dict[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    merged: dict[str, tuple[str, ...]] = {}
    for flt in filters:
        for key, value in flt.items():
            values = tuple(value) if isinstance(value, list) else (value,)
            if key in merged:
                raise ValueError(f"filter field '{key}' is given twice")
            merged[key] = tuple(sorted({str(encode_value(v)) for v in values}))
    return tuple(sorted(merged.items()))


def compile_spec(model: SpecModel) -> SpecPlan:
    names: dict[str, FeatureDef] = {}
    enriched = {x for e in model.enrich for x in (e.country, e.network)}
    prim_index: dict[tuple[Any, ...], int] = {}
    horizons: dict[int, int] = {}
    sigs: list[tuple[Any, ...]] = []
    features: list[Feature] = []

    def prim(entity: str, kind: str, fld: str | None, where: Any, hop: int, reach: int) -> int:
        sig = (entity, kind, fld, where, hop)
        if sig not in prim_index:
            prim_index[sig] = len(sigs)
            sigs.append(sig)
        pid = prim_index[sig]
        horizons[pid] = max(horizons.get(pid, 0), reach)
        return pid

    for i, d in enumerate(model.features):
        where_label = f"features[{i}] '{d.name}'"
        try:
            if d.name in names:
                raise ValueError("the name is used twice")
            if d.name in enriched:
                raise ValueError("the name is taken by an enrichment")
            if d.entity is not None and d.entity not in model.entities:
                raise ValueError(
                    f"unknown entity '{d.entity}' (known: {', '.join(model.entities)})"
                )
            window = parse_duration(d.window) if d.window else 0
            hop = parse_duration(d.hop) if d.hop else max(1, window // 12) if window else 0
            reach = window + hop
            w = canonical_where(d.where)
            ent = d.entity or ""
            prims: tuple[int, ...] = ()
            if d.kind == "count":
                prims = (prim(ent, "c", None, w, hop, reach),)
            elif d.kind == "sum":
                prims = (prim(ent, "s", d.field, w, hop, reach),)
            elif d.kind == "mean":
                # The mean is over the events that have the field: its count requires it too.
                prims = (
                    prim(ent, "s", d.field, w, hop, reach),
                    prim(ent, "c", d.field, w, hop, reach),
                )
            elif d.kind == "max":
                prims = (prim(ent, "m", d.field, w, hop, reach),)
            elif d.kind == "distinct":
                prims = (prim(ent, "d", d.field, w, hop, reach),)
            elif d.kind == "share":
                wm = canonical_where(d.where, d.match)
                prims = (prim(ent, "c", None, wm, hop, reach), prim(ent, "c", None, w, hop, reach))
            elif d.kind == "time_since_last":
                prims = (prim(ent, "l", None, w, 0, 0),)
            elif d.kind == "time_since_first":
                prims = (prim(ent, "f", None, w, 0, 0),)
            elif d.kind == "last_value":
                prims = (prim(ent, "v", d.field, w, 0, 0),)
        except ValueError as exc:
            raise InvalidSpec(f"feature spec: {where_label}: {exc}") from None
        names[d.name] = d
        features.append(Feature(d.name, d.kind, d.hidden, d, window, hop, prims))

    primitives = tuple(
        Primitive(pid, sig[0], sig[1], sig[2], sig[3], sig[4], horizons[pid])
        for pid, sig in enumerate(sigs)
    )
    ttl: dict[str, int] = {}
    for name, entity_def in model.entities.items():
        try:
            ttl[name] = parse_duration(entity_def.ttl)
        except ValueError as exc:
            raise InvalidSpec(f"feature spec: entities.{name}.ttl: {exc}") from None
    for p in primitives:
        if p.horizon > ttl[p.entity]:
            raise InvalidSpec(
                f"feature spec: entity '{p.entity}': ttl {model.entities[p.entity].ttl} is "
                "shorter than a window that reads it"
            )
    payload = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    version = hashlib.sha256(payload.encode()).hexdigest()[:16]
    output = tuple(f.name for f in features if not f.hidden)
    return SpecPlan(model, version, primitives, tuple(features), ttl, 10**model.decimals, output)


def load_spec(path: str | Path) -> SpecPlan:
    """Read, validate and compile a spec; `InvalidSpec` names the entry at fault."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidSpec(f"feature spec {path} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"feature spec {path} is not valid YAML: {exc}") from exc
    return parse_spec(raw, str(path))


def parse_spec(raw: Any, source: str = "feature spec") -> SpecPlan:
    if not isinstance(raw, dict):
        raise InvalidSpec(f"{source}: expected a mapping with name, entities and features")
    try:
        model = SpecModel.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        entry = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "features" and isinstance(loc[1], int):
            features = raw.get("features") or []
            item = features[loc[1]] if loc[1] < len(features) else {}
            if isinstance(item, dict) and "name" in item:
                entry = f"features[{loc[1]}] '{item['name']}'" + "".join(
                    f".{p}" for p in loc[2:] if not str(p).startswith("function-")
                )
        raise InvalidSpec(f"{source}: {entry}: {err['msg']}") from None
    plan = compile_spec(model)
    _check_references(plan, source)
    return plan


def _check_references(plan: SpecPlan, source: str) -> None:
    """a/b refer to an earlier feature, an enriched field, or an event field."""
    seen: set[str] = set()
    all_names = {f.name for f in plan.features}
    for i, f in enumerate(plan.features):
        for ref in (f.definition.a, f.definition.b):
            if ref and ref in all_names and ref not in seen:
                raise InvalidSpec(
                    f"{source}: features[{i}] '{f.name}': refers to '{ref}', "
                    "which is defined later (define it first)"
                )
        seen.add(f.name)
