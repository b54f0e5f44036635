"""What is published: municipalities, their collections, and the regional view derived from them.

A *dataset* is one API root: a municipality (`/municipalities/{slug}`) or the region (`/region`). Each
has collections; a regional collection is the union of the municipalities' public collections of one
layer type, so it has several member collections and prefixes feature ids with the municipality.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import asyncpg

from service.i18n import N_
from service.layertypes import REGIONAL_IDS, LayerType, registry
from service.sql.catalog import fetch_catalog

REGION_SUFFIX = " – region"  # a regional collection's title: its layer type's, and this (pages translate both)
# The descriptions the catalog writes itself: English in the JSON; the pages translate them (service/i18n.py)
# with their values, kept beside them (`description_text`).
REGION_DESCRIPTION = N_("All municipalities' public layers, one collection per layer type.")
MUNICIPALITY_DESCRIPTION = N_("Layers published by %(name)s (%(state)s, AGS %(ags)s).")
REGIONAL_DESCRIPTION = N_("%(layer)s of every municipality that publishes them (%(names)s).")
NONE_YET = N_("none yet")


def _written(message: str, **values: str) -> tuple[str, tuple[str, dict[str, str]]]:
    """A description in English and what a page needs to say it in its language."""
    return message % values, (message, values)

REGION_SLUG = "region"


@dataclass(frozen=True)
class Municipality:
    pk: int
    slug: str
    name: str
    ags: str
    state: str
    crs: int
    bbox: tuple[float, float, float, float] | None


@dataclass
class Collection:
    id: str
    title: str
    description: str
    layer_type: LayerType
    licence: str
    attribution: str
    keywords: list[str]
    visibility: str
    created: dt.datetime | None
    updated: dt.datetime | None
    # (collection pk, municipality slug) of every stored collection this one reads from.
    members: list[tuple[int, str]]
    # What caches and ETags key its data on: each member's row, version and when that version was made
    # (service.sql.catalog.VERSION_KEY), so no other collection, nor this one at another time, shares it.
    version: str
    feature_count: int
    bbox: tuple[float, float, float, float] | None
    temporal: tuple[dt.date | None, dt.date | None] | None
    regional: bool = False
    # After `geotwin history prune`: `asOf` reaches back to `history_from`, and the change feed has lost the
    # changes up to `history_pruned_through` (a reader behind it starts again from 0).
    history_from: dt.datetime | None = None
    history_pruned_through: int = 0
    description_text: tuple[str, dict[str, str]] | None = None  # when the catalog wrote the description


@dataclass
class Dataset:
    slug: str
    title: str
    description: str
    regional: bool
    collections: dict[str, Collection] = field(default_factory=dict)
    municipality: Municipality | None = None
    description_text: tuple[str, dict[str, str]] | None = None  # the description's message and values

    @property
    def path(self) -> str:
        return f"/{REGION_SLUG}" if self.regional else f"/municipalities/{self.slug}"


@dataclass
class Catalog:
    municipalities: dict[str, Municipality]
    datasets: dict[str, Dataset]  # what everybody sees: public collections
    region: Dataset
    # What a municipality's own members see: its public and internal collections.
    members: dict[str, Dataset] = field(default_factory=dict)
    # The primary's WAL position when this was read (with read replicas): a replica that has replayed it
    # holds at least the rows of these collection versions.
    lsn: int = 0


def _union_bbox(boxes: list) -> tuple[float, float, float, float] | None:
    boxes = [b for b in boxes if b]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _union_temporal(spans: list) -> tuple[dt.date | None, dt.date | None] | None:
    spans = [s for s in spans if s and s[0]]
    if not spans:
        return None
    ends = [s[1] for s in spans]
    return min(s[0] for s in spans), (None if any(e is None for e in ends) else max(ends))


def _regional(collections_by_type: dict[str, list[tuple[Municipality, Collection]]]) -> Dataset:
    description, text = _written(REGION_DESCRIPTION)
    region = Dataset(REGION_SLUG, "Region", description, regional=True, description_text=text)
    types = registry()
    for layer_name, cid in REGIONAL_IDS.items():
        parts = collections_by_type.get(layer_name, [])
        layer = types[layer_name]
        description, text = _written(REGIONAL_DESCRIPTION, layer=layer.title,
                                     names=", ".join(sorted({m.name for m, _ in parts})) or NONE_YET)
        region.collections[cid] = Collection(
            id=cid, title=f"{layer.title}{REGION_SUFFIX}", layer_type=layer, regional=True,
            description=description, description_text=text,
            licence="; ".join(sorted({c.licence for _, c in parts if c.licence})),
            attribution="; ".join(sorted({c.attribution for _, c in parts if c.attribution})),
            keywords=sorted({k for _, c in parts for k in c.keywords}), visibility="public",
            created=min((c.created for _, c in parts if c.created), default=None),
            updated=max((c.updated for _, c in parts if c.updated), default=None),
            members=[mem for _, c in parts for mem in c.members],
            version=".".join(c.version for _, c in parts) or "0",
            feature_count=sum(c.feature_count for _, c in parts),
            bbox=_union_bbox([c.bbox for _, c in parts]),
            temporal=_union_temporal([c.temporal for _, c in parts]),
            history_from=max((c.history_from for _, c in parts if c.history_from), default=None),
        )
    return region


def build_catalog(rows: list[asyncpg.Record]) -> Catalog:
    """Turn the catalog rows into datasets: public collections for everybody (and the region), public and
    internal ones for the municipality's own members."""
    types = registry()
    municipalities: dict[str, Municipality] = {}
    datasets: dict[str, Dataset] = {}
    members: dict[str, Dataset] = {}
    by_type: dict[str, list[tuple[Municipality, Collection]]] = {}
    for r in rows:
        slug = r["m_slug"]
        if slug not in municipalities:
            m = Municipality(r["m_pk"], slug, r["m_name"], r["m_ags"], r["m_state"], r["m_crs"],
                             tuple(r["m_bbox"]) if r["m_bbox"] else None)
            municipalities[slug] = m
            description, text = _written(MUNICIPALITY_DESCRIPTION, name=m.name, state=m.state, ags=m.ags)
            datasets[slug] = Dataset(slug, m.name, description, regional=False, municipality=m,
                                     description_text=text)
            members[slug] = Dataset(slug, m.name, description, regional=False, municipality=m,
                                    description_text=text)
        m = municipalities[slug]
        if r["pk"] is None or r["layer_type"] not in types:
            continue
        c = Collection(
            id=r["slug"], title=r["title"], description=r["description"], layer_type=types[r["layer_type"]],
            licence=r["licence"], attribution=r["attribution"], keywords=list(r["keywords"]),
            visibility=r["visibility"], created=r["created_at"], updated=r["updated_at"],
            members=[(r["pk"], slug)], version=r["version_key"], feature_count=r["feature_count"],
            bbox=tuple(r["bbox"]) if r["bbox"] else None,
            temporal=(r["temporal_start"], r["temporal_end"]) if r["temporal_start"] else None,
            history_from=r["history_from"], history_pruned_through=r["history_pruned_through"],
        )
        members[slug].collections[c.id] = c
        if c.visibility == "public":
            datasets[slug].collections[c.id] = c
            by_type.setdefault(r["layer_type"], []).append((m, c))
    return Catalog(municipalities, datasets, _regional(by_type), members)


async def load_catalog(conn: asyncpg.Connection) -> Catalog:
    """The current catalog (a few dozen rows: read per request, so it is never stale)."""
    return build_catalog(await fetch_catalog(conn))
