"""A deterministic generator of the three layer families at any size, for scale tests and benchmarks.

Features are made in chunks of `CHUNK`; chunk k is drawn from a generator seeded with (seed, layer, k),
so feature i is the same whatever the total size: 1,000 features are the first 1,000 of 2,000,000.
Geometry is built vectorised (numpy + Shapely 2) in EPSG:25832 over the Halle–Leipzig–Magdeburg region.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import orjson
import shapely

from service.sql.write import FeatureRow

CHUNK = 10_000
LAYERS = ("commercial-site", "planning-zone", "ecological-zone")
# EPSG:25832 box around Magdeburg, Halle and Leipzig (shared/DOMAIN.md reference points, with margin).
REGION = (660_000.0, 5_680_000.0, 750_000.0, 5_790_000.0)

ZONING = ["GE", "GI", "SO", "GE_E"]
AVAILABILITY = ["verfuegbar", "reserviert", "vermarktet", "in_entwicklung"]
SERVICING = ["erschlossen", "teilerschlossen", "unerschlossen"]
OWNERSHIP = ["kommunal", "privat", "gemischt"]
LAND_USE = ["WR", "WA", "MI", "MU", "MK", "GE", "GI", "SO", "GRUEN", "VERKEHR", "WALD", "LANDWIRTSCHAFT"]
PLAN_STATUS = ["in_aufstellung", "rechtskraeftig", "aufgehoben"]
CATEGORY = ["NSG", "LSG", "FFH", "SPA", "UESG", "BIOTOP", "ND", "WSG"]
PLACES = ["Nord", "Süd", "Ost", "West", "Mitte", "Aue", "Heide", "Börde", "Saaleblick", "Elbufer", "Gänseanger",
          "Mühlgraben", "Großer Anger", "Lößnitz", "Köthener Straße"]


@dataclass(frozen=True)
class Spec:
    layer: str
    size: int
    seed: int = 42
    vertices: int = 48  # ecological zones' ring vertices (benchmarks use 1,000+)


def _rng(spec: Spec, chunk: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, LAYERS.index(spec.layer), chunk])


def _centres(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = REGION
    return rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)


def _rectangles(rng: np.random.Generator, n: int, min_m: float, max_m: float) -> np.ndarray:
    """Rotated rectangles as Shapely polygons."""
    cx, cy = _centres(rng, n)
    w, h = rng.uniform(min_m, max_m, n), rng.uniform(min_m, max_m, n)
    angle = rng.uniform(0, np.pi / 2, n)
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5]])
    dx, dy = corners[:, 0][None, :] * w[:, None], corners[:, 1][None, :] * h[:, None]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    coords = np.stack([cx[:, None] + dx * cos - dy * sin, cy[:, None] + dx * sin + dy * cos], axis=-1)
    return shapely.polygons(np.round(coords, 2))


def _star_zones(rng: np.random.Generator, n: int, vertices: int) -> np.ndarray:
    """Irregular closed rings (radius modulated by a few harmonics) with `vertices` points; every fifth has
    a hole, so the complex-geometry paths are exercised."""
    cx, cy = _centres(rng, n)
    radius = rng.uniform(300, 2500, n)
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    amp = rng.uniform(0.02, 0.12, (n, 3))
    phase = rng.uniform(0, 2 * np.pi, (n, 3))
    wobble = sum(amp[:, k:k + 1] * np.sin((k + 2) * t[None, :] + phase[:, k:k + 1]) for k in range(3))
    r = radius[:, None] * (1 + wobble)
    ring = np.stack([cx[:, None] + r * np.cos(t), cy[:, None] + r * np.sin(t)], axis=-1)
    ring = np.round(np.concatenate([ring, ring[:, :1]], axis=1), 2)
    shells = shapely.linearrings(ring)
    polys = shapely.polygons(shells)
    with_hole = np.arange(n) % 5 == 0
    if with_hole.any():
        th = np.linspace(2 * np.pi, 0, 17)  # clockwise
        hr = radius[with_hole, None] * 0.2
        hole = np.stack([cx[with_hole, None] + hr * np.cos(th), cy[with_hole, None] + hr * np.sin(th)], axis=-1)
        holes = shapely.linearrings(np.round(hole, 2))
        polys[with_hole] = [shapely.Polygon(s, [h]) for s, h in zip(shells[with_hole], holes, strict=True)]
    return polys


def _date(rng: np.random.Generator, n: int, start: date, days: int) -> list[str]:
    return [(start + timedelta(days=int(d))).isoformat() for d in rng.integers(0, days, n)]


def _properties(spec: Spec, rng: np.random.Generator, n: int, first: int, geoms: np.ndarray) -> list[dict]:
    area_ha = np.round(shapely.area(geoms) / 10_000, 2)
    place = rng.integers(0, len(PLACES), n)
    if spec.layer == "commercial-site":
        z, a, s, o = (rng.integers(0, len(v), n) for v in (ZONING, AVAILABILITY, SERVICING, OWNERSHIP))
        net = np.round(area_ha * rng.uniform(0.7, 0.95, n), 2)
        km = np.round(rng.uniform(0.2, 25, n), 1)
        price = np.round(rng.uniform(15, 120, n), 0)
        rail = rng.random(n) < 0.2
        upd = _date(rng, n, date(2023, 1, 1), 1000)
        return [{"name": f"Gewerbefläche {PLACES[place[i]]} {first + i}", "area_gross_ha": float(area_ha[i]),
                 "area_net_ha": float(net[i]), "zoning": ZONING[z[i]], "availability": AVAILABILITY[a[i]],
                 "servicing": SERVICING[s[i]], "ownership": OWNERSHIP[o[i]], "price_eur_m2": float(price[i]),
                 "motorway_km": float(km[i]), "rail_siding": bool(rail[i]), "last_update": upd[i]}
                for i in range(n)]
    if spec.layer == "planning-zone":
        lu, st = rng.integers(0, len(LAND_USE), n), rng.integers(0, len(PLAN_STATUS), n)
        grz = np.round(rng.uniform(0.2, 0.8, n), 1)
        start = _date(rng, n, date(1991, 1, 1), 12_000)
        out = []
        for i in range(n):
            status = PLAN_STATUS[st[i]]
            p = {"plan_number": f"B-Plan Nr. {first + i}", "plan_name": f"{PLACES[place[i]]}, Teilgebiet {i % 7 + 1}",
                 "plan_type": "BPLAN", "plan_status": status, "land_use": LAND_USE[lu[i]], "grz": float(grz[i])}
            if status != "in_aufstellung":
                p["in_force_from"] = start[i]
            if status == "aufgehoben":
                p["in_force_until"] = (date.fromisoformat(start[i]) + timedelta(days=3650)).isoformat()
            out.append(p)
        return out
    cat = rng.integers(0, len(CATEGORY), n)
    designated = _date(rng, n, date(1950, 1, 1), 26_000)
    return [{"official_id": f"GEN-{CATEGORY[cat[i]]}-{first + i:07d}", "name": f"Schutzgebiet {PLACES[place[i]]} "
             f"{first + i}", "category": CATEGORY[cat[i]], "designated_on": designated[i],
             "authority": "Generiert (Testdaten)"} for i in range(n)]


def chunk(spec: Spec, k: int) -> tuple[np.ndarray, list[dict]]:
    """Chunk k of the layer: (geometries, properties), always the same for the same seed."""
    rng = _rng(spec, k)
    n = CHUNK
    if spec.layer == "commercial-site":
        geoms = _rectangles(rng, n, 100, 800)
    elif spec.layer == "planning-zone":
        geoms = _rectangles(rng, n, 50, 500)
    else:
        geoms = _star_zones(rng, n, spec.vertices)
    return geoms, _properties(spec, rng, n, k * CHUNK, geoms)


def features(spec: Spec) -> Iterator[list[FeatureRow]]:
    """Rows for COPY, a chunk at a time (bounded memory at any size)."""
    from service.layertypes import registry

    layer = registry()[spec.layer]
    validity = {"planning-zone": ("in_force_from", "in_force_until"),
                "ecological-zone": ("designated_on", "repealed_on")}.get(spec.layer)
    for k in range((spec.size + CHUNK - 1) // CHUNK):
        geoms, props = chunk(spec, k)
        take = min(CHUNK, spec.size - k * CHUNK)
        wkb = shapely.to_wkb(geoms[:take])
        rows = []
        for i in range(take):
            p = props[i]
            issues = layer.check(p)
            if issues:  # every write is checked against its layer type, generated ones too
                raise ValueError(f"generated feature {k * CHUNK + i} breaks {spec.layer}: {issues[0]}")
            start = date.fromisoformat(p[validity[0]]) if validity and p.get(validity[0]) else None
            end = date.fromisoformat(p[validity[1]]) if validity and p.get(validity[1]) else None
            rows.append((f"g{k * CHUNK + i + 1}", wkb[i], orjson.dumps(p).decode(), start, end))
        yield rows
