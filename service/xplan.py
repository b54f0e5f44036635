"""XPlanGML (XPlanung 4.x to 6.x, the German exchange standard for land-use and development plans) read as the
planning-zone layer type.

A planning office delivers a Bebauungsplan or Flächennutzungsplan as one XPlanGML file: the plan (BP_Plan /
FP_Plan: number, name, type, legal status, dates), its areas (BP_Bereich / FP_Bereich) and the plan's contents.
The contents that give an area its land use become planning zones, each carrying its plan's attributes:

- building areas (BP_BaugebietsTeilFlaeche, FP_BebauungsFlaeche) by their BauNVO zone (besondereArtDerBaulNutzung:
  1100 → WR … 1800 → GI), else their building land (allgArtDerBaulNutzung: 1000 → W … 4000 → S), with GRZ, GFZ,
  the number of storeys and a maximum height above ground;
- green, traffic, water, forest and agricultural areas as GRUEN, VERKEHR, WASSER, WALD, LANDWIRTSCHAFT.

Everything else in the file (building lines, presentation objects, plantings …) is no zone: it is counted in the
report (`skipped`), not imported. A zone the layer type cannot express (a "sonstiges Gebiet", private green) is
rejected with the reason, and then nothing is imported, as with any other file.

The XML is read with defusedxml (no DTDs, no entities: a "billion laughs" file is refused), the geometries by
GDAL's GML reader (every GML geometry, arcs as straight segments), joined by gml:id. The zones go to a
GeoPackage in the import's work directory, which the importer then reads like any other file.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET
import pyarrow as pa
import pyogrio

from service.crs import resolve
from service.errors import InvalidData, InvalidParameter
from service.geojsoncheck import ring_not_closed
from service.loader import FeatureIssue
from service.sources import WORK_PREFIX

LAYER_TYPE = "planning-zone"
XPLAN_NS = re.compile(r"^\{http://www\.xplanung\.de/xplangml/(\d+)/(\d+)\}")
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
GML = "{http://www.opengis.net/gml"  # 3.1 and 3.2
GML_ID = re.compile(r"^\{http://www\.opengis\.net/gml(?:/3\.2)?\}id$")
# Open options for GDAL's GML reader: no .gfs file beside the upload, no attempt to fetch the XSD.
GML_OPTIONS = {"WRITE_GFS": "NO", "DOWNLOAD_SCHEMA": "NO"}
CURVES = {"Arc", "ArcString", "ArcByBulge", "ArcStringByBulge", "ArcByCenterPoint", "Circle", "CircleByCenterPoint"}

# XP_BesondereArtDerBaulNutzung (the building zone, Baugebiet) → the layer type's land_use.
BAUNVO = {"1000": "WS", "1100": "WR", "1200": "WA", "1300": "WB", "1400": "MD", "1450": "MDW", "1500": "MI",
          "1550": "MU", "1600": "MK", "1700": "GE", "1800": "GI", "2000": "SO", "2100": "SO", "3000": "SO",
          "4000": "SO"}
# XP_AllgArtDerBaulNutzung (the building land, Baufläche), which an F-Plan often gives alone.
GENERAL = {"1000": "W", "2000": "M", "3000": "G", "4000": "S"}
BUILDING_AREAS = {"BP_BaugebietsTeilFlaeche", "FP_BebauungsFlaeche"}
OTHER_AREAS = {"BP_GruenFlaeche": "GRUEN", "FP_Gruen": "GRUEN",
               "BP_StrassenVerkehrsFlaeche": "VERKEHR", "BP_VerkehrsflaecheBesondererZweckbestimmung": "VERKEHR",
               "FP_Strassenverkehr": "VERKEHR", "SO_Strassenverkehr": "VERKEHR",  # 6.x: also taken over into B-Plans
               "BP_GewaesserFlaeche": "WASSER", "FP_Gewaesser": "WASSER", "SO_Gewaesser": "WASSER",
               "BP_WaldFlaeche": "WALD", "FP_WaldFlaeche": "WALD",
               "BP_LandwirtschaftsFlaeche": "LANDWIRTSCHAFT", "FP_LandwirtschaftsFlaeche": "LANDWIRTSCHAFT"}
PLANS = {"BP_Plan", "FP_Plan"}
AREAS = {"BP_Bereich", "FP_Bereich"}
ZONES = BUILDING_AREAS | set(OTHER_AREAS)  # the classes that are planning zones
WHOLE = PLANS | AREAS  # the classes kept whole while the file is read

# BP_PlanArt → plan_type (the Satzungen of §34/35 BauGB and local building rules are no development plans).
BP_TYPES = {"1000": "BPLAN", "10000": "BPLAN", "10001": "BPLAN", "10002": "BPLAN", "3000": "VBPLAN",
            "3100": "VBPLAN"}
# BP_Rechtsstand / FP_Rechtsstand → plan_status. A plan partly out of force is still in force for the rest.
IN_PREPARATION = {"1000", "2000", "2100", "2200", "2250", "2300", "2400", "3000"}
IN_FORCE = {"4000", "4500", "45000", "45001"}
REPEALED = {"5000", "50000", "50001"}
# XP_ArtHoehenbezug relative to the ground, the pavement or the street, and XP_ArtHoehenbezugspunkt OK (top) or
# FH (ridge): only such a height is a building's maximum height in metres.
HEIGHT_ABOVE_GROUND = {"2000", "2500", "3500"}
HEIGHT_TOP = {"3000", "2000"}
# srsName forms GDAL may not know: the AdV's (German surveying authorities) names.
ADV_CRS = {"ETRS89_UTM32": "EPSG:25832", "ETRS89_UTM33": "EPSG:25833", "DE_DHDN_3GK2": "EPSG:31466",
           "DE_DHDN_3GK3": "EPSG:31467", "DE_DHDN_3GK4": "EPSG:31468"}
COLUMNS = [("id", pa.string()), ("plan_number", pa.string()), ("plan_name", pa.string()),
           ("plan_type", pa.string()), ("plan_status", pa.string()), ("zone_name", pa.string()),
           ("land_use", pa.string()), ("grz", pa.float64()), ("gfz", pa.float64()), ("max_storeys", pa.int64()),
           ("max_height_m", pa.float64()), ("in_force_from", pa.string()), ("in_force_until", pa.string())]
ZONE_FIELDS = ("zone_name", "land_use", "grz", "gfz", "max_storeys", "max_height_m")  # a zone's own properties
BATCH = 20_000  # zones written to the GeoPackage at a time


def is_xplan(path: Path) -> bool:
    return path.suffix.lower() == ".gml"


@dataclass
class _Object:
    """One feature of the file: its class, gml:id, position among the file's features, the text of its
    direct children, of all its descendants (first of each name), and where its xlinks point."""

    kind: str
    gml_id: str
    index: int
    direct: dict[str, str] = field(default_factory=dict)
    deep: dict[str, str] = field(default_factory=dict)
    links: dict[str, list[str]] = field(default_factory=dict)
    curved: bool = False  # its geometry has arcs (GDAL reads them as straight segments)
    open_ring: str = ""  # what is wrong with the first ring of its geometry that does not close


@dataclass
class Converted:
    """The zones as a GeoPackage the importer reads, where each came from, and what the file held besides."""

    path: Path
    positions: list[int]  # the n-th zone's index among the file's features
    skipped: dict[str, int]
    version: str
    linearized: int

    @property
    def driver(self) -> str:
        return f"XPlanGML {self.version}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@dataclass(slots=True)
class _Zone:
    """A zone as read: its own attributes already turned into the layer type's properties (ZONE_FIELDS), and
    what is still needed once the plans are known. Only this much is kept of each, so that a plan of any size
    fits in memory (its geometries are read by GDAL batch by batch when the GeoPackage is written)."""

    kind: str
    gml_id: str
    index: int
    areas: tuple[str, ...]
    props: tuple[Any, ...]
    problems: tuple[tuple[str, str], ...]


@dataclass
class _Contents:
    """What the file holds: its plans and areas (whole), its zones (in brief), the classes skipped, how many
    zones have arcs, the XPlanGML version and the first srsName."""

    objects: list[_Object] = field(default_factory=list)
    zones: list[_Zone] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    curved: int = 0
    version: str = ""
    srs_name: str | None = None


def _read(path: Path, seen: Callable[[int], Any] | None = None) -> _Contents:
    """The file's plans, areas and zones, read as a stream: each feature's elements are dropped once it is
    read, so memory grows only by a zone's brief (about 500 bytes), not by its XML. `seen` is told the number of
    features read, every thousand."""
    found = _Contents()
    path_tags: list[str] = []  # the local names from the root to the element being read
    elements: list[ET.Element] = []  # the elements from the root to the one being read
    index = -1
    try:
        for event, elem in SafeET.iterparse(path, events=("start", "end"), forbid_dtd=True):
            if event == "start":
                path_tags.append(_local(elem.tag))
                elements.append(elem)
                if len(path_tags) == 1:
                    match = XPLAN_NS.match(elem.tag)
                    if match is None or path_tags[0] not in ("XPlanAuszug", "FeatureCollection"):
                        raise InvalidData(f"not an XPlanGML file: it begins with <{path_tags[0]}>, not "
                                          "<xplan:XPlanAuszug> in an XPlanung namespace", parameter="file")
                    found.version = f"{match[1]}.{match[2]}"
                elif found.srs_name is None and "srsName" in elem.attrib:
                    found.srs_name = elem.attrib["srsName"]
                continue
            path_tags.pop()
            elements.pop()
            if len(path_tags) == 2 and path_tags[1] in ("featureMember", "featureMembers"):
                index += 1  # a feature: XPlanAuszug > featureMember(s) > feature
                _take(found, elem, index)
                if seen is not None and index % 1000 == 999:
                    seen(index + 1)
                elements[-1].remove(elem)  # featureMembers holds them all: drop each once read
            elif len(path_tags) == 1:
                elements[-1].remove(elem)
    except defusedxml.DefusedXmlException as exc:
        raise InvalidData(f"the file declares a DTD or entities ({exc.__class__.__name__}); XPlanGML files do not, "
                          "and they are refused: they can make a small file expand without end",
                          parameter="file") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise InvalidData(f"the file is not well-formed XML (line {line}, column {column}): is it complete?",
                          parameter="file") from None
    return found


def _take(found: _Contents, elem: ET.Element, index: int) -> None:
    """One feature of the file into what is kept of it."""
    kind = sys.intern(_local(elem.tag))
    if kind in WHOLE:
        found.objects.append(_feature(elem, kind, index))
    elif kind in ZONES:
        obj = _feature(elem, kind, index)
        props, problems = _zone_properties(obj)
        if not obj.gml_id:
            problems.append(("id", f"the {kind} has no gml:id, which XPlanGML requires of every object"))
        if obj.open_ring:
            problems.append(("geometry", obj.open_ring))
        found.zones.append(_Zone(kind, obj.gml_id, index,
                                 tuple(sys.intern(a) for a in obj.links.get("gehoertZuBereich", [])),
                                 tuple(props.get(name) for name in ZONE_FIELDS), tuple(problems)))
        found.curved += obj.curved
    else:
        found.skipped[kind] += 1


def _feature(elem: ET.Element, kind: str, index: int) -> _Object:
    gml_id = next((v for k, v in elem.attrib.items() if GML_ID.match(k)), "")
    obj = _Object(kind, gml_id, index)
    for child in elem:
        name = _local(child.tag)
        if XLINK_HREF in child.attrib:
            obj.links.setdefault(name, []).append(child.attrib[XLINK_HREF].lstrip("#"))
        elif child.text and child.text.strip() and len(child) == 0:
            obj.direct.setdefault(name, child.text.strip())
    for sub in elem.iter():
        if sub.tag.startswith(GML):  # geometry: GDAL reads it; whether it has arcs or an open ring is noted here
            obj.curved |= _local(sub.tag) in CURVES
            if _local(sub.tag) == "LinearRing" and not obj.open_ring:
                obj.open_ring = _open_ring(sub)
        elif sub is not elem and len(sub) == 0 and sub.text and sub.text.strip():
            obj.deep.setdefault(_local(sub.tag), sub.text.strip())
    return obj


def _open_ring(ring: ET.Element) -> str:
    """Why a gml:LinearRing is no ring, when its last point is not its first; "" when it closes, or when its
    points are written in a form left to GDAL. GDAL's reader drops such a geometry and says why only in a
    warning, so the report would say no more than "no geometry"."""
    ns = ring.tag[:ring.tag.index("}") + 1]
    pos_list = ring.find(ns + "posList")
    if pos_list is not None and pos_list.text:
        given = pos_list.get("srsDimension") or ring.get("srsDimension") or "2"
        dim = int(given) if given.isdigit() else 0
        first, last = pos_list.text.split(None, dim)[:dim], pos_list.text.rsplit(None, dim)[-dim:]
        if dim < 2 or len(first) < dim:
            return ""
    else:
        points = [p.text.split() for p in ring.findall(ns + "pos") if p.text]
        if len(points) < 2:
            return ""
        first, last = points[0], points[-1]
    try:
        if [float(v) for v in first] == [float(v) for v in last]:
            return ""
    except ValueError:
        return ""
    return ring_not_closed(" ".join(first), " ".join(last))


def _crs_name(srs_name: str | None) -> str | None:
    if not srs_name:
        return None
    adv = srs_name.rsplit(":", 1)[-1]
    if srs_name.startswith("urn:adv:crs:"):
        return ADV_CRS.get(adv.split("*", 1)[0], srs_name)
    return srs_name


def _number(text: str | None) -> float | str | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text  # the layer type's check names it


def _plan_properties(plan: _Object) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The plan's part of each zone's properties, and what is wrong with the plan."""
    problems: list[tuple[str, str]] = []
    d = plan.direct
    props: dict[str, Any] = {"plan_name": d.get("name")}
    development = plan.kind == "BP_Plan"
    number = d.get("nummer")
    if number is None:
        problems.append(("plan_number", f"the plan {plan.gml_id} gives no nummer"))
    props["plan_number"] = (f"B-Plan Nr. {number}" if development and number and number[0].isdigit() else number)
    if development:
        art = d.get("planArt")
        props["plan_type"] = BP_TYPES.get(art or "")
        if props["plan_type"] is None:
            problems.append(("plan_type", f"the plan {plan.gml_id} has planArt {art}: not a Bebauungsplan (1000, "
                                          "10000-10002) or vorhabenbezogener Bebauungsplan (3000, 3100)"
                             if art else f"the plan {plan.gml_id} gives no planArt"))
    else:
        props["plan_type"] = "FNP"
    start = d.get("inkrafttretensDatum" if development else "wirksamkeitsDatum")
    end = d.get("untergangsDatum")
    props["in_force_from"], props["in_force_until"] = start, end
    status = d.get("rechtsstand")
    if status in IN_PREPARATION:
        props["plan_status"] = "in_aufstellung"
    elif status in IN_FORCE:
        props["plan_status"] = "rechtskraeftig"
    elif status in REPEALED:
        props["plan_status"] = "aufgehoben"
    elif status is None and end and end <= dt.date.today().isoformat():
        props["plan_status"] = "aufgehoben"  # no legal status given: the dates say it
    elif status is None and start:
        props["plan_status"] = "rechtskraeftig"
    else:
        problems.append(("plan_status", f"the plan {plan.gml_id} has rechtsstand {status}, which has no status "
                                        "here" if status else f"the plan {plan.gml_id} gives neither rechtsstand nor "
                                                              "a date of entry into force"))
    return props, problems


def _zone_properties(zone: _Object) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    d, deep = zone.direct, zone.deep
    props: dict[str, Any] = {}
    if zone.kind in BUILDING_AREAS:
        special, general = d.get("besondereArtDerBaulNutzung"), d.get("allgArtDerBaulNutzung")
        if special in BAUNVO:
            props["land_use"] = BAUNVO[special]
        elif special is None and general in GENERAL:
            props["land_use"] = GENERAL[general]
        elif special is not None:
            return props, [("land_use", f"{zone.kind} {zone.gml_id} has besondereArtDerBaulNutzung {special}"
                                        + (" (sonstiges Gebiet)" if special == "9999" else "") +
                                        f", which the layer type {LAYER_TYPE} has no code for")]
        else:
            return props, [("land_use", f"{zone.kind} {zone.gml_id} has allgArtDerBaulNutzung {general}"
                                        + (" (sonstige Baufläche)" if general == "9999" else "") +
                                        f", which the layer type {LAYER_TYPE} has no code for" if general else
                                        f"{zone.kind} {zone.gml_id} gives no land use")]
        props["grz"] = _number(deep.get("GRZ") or deep.get("GRZmax"))
        props["gfz"] = _number(deep.get("GFZ") or deep.get("GFZmax"))
        storeys = _number(deep.get("Z") or deep.get("Zmax") or deep.get("Zzwingend"))
        props["max_storeys"] = int(storeys) if isinstance(storeys, float) and storeys.is_integer() else storeys
        if deep.get("hoehenbezug") in HEIGHT_ABOVE_GROUND and deep.get("bezugspunkt") in HEIGHT_TOP:
            props["max_height_m"] = _number(deep.get("hMax") or deep.get("h"))
    else:
        if zone.kind in ("BP_GruenFlaeche", "FP_Gruen") and d.get("nutzungsform") == "1000":
            return props, [("land_use", f"{zone.kind} {zone.gml_id} is private green (nutzungsform 1000); the "
                                        f"layer type {LAYER_TYPE} has only public green (GRUEN)")]
        props["land_use"] = OTHER_AREAS[zone.kind]
    name = " ".join(v for v in (d.get("gliederung1"), d.get("gliederung2")) if v)
    props["zone_name"] = name or None
    return props, []


def convert(path: Path, given_crs: str | None = None, work: Path | None = None,
            seen: Callable[[int], Any] | None = None,
            wrote: Callable[[int, int], Any] | None = None) -> tuple[Converted, list[FeatureIssue]]:
    """The file's zones as a GeoPackage in `work` (a new work directory when None; the caller removes it), and
    every problem found. Raises InvalidData for a file that is no XPlanGML, or one without plan or zones.
    `seen` is told how many of the file's features have been read, every thousand; `wrote` how many zones of how
    many are in the GeoPackage, before the first and after each batch (GDAL reads their geometries from the file
    once more meanwhile: 12 s, after 17 s of reading, for 100,000 zones here)."""
    found = _read(path, seen)
    by_id = {o.gml_id: o for o in found.objects}
    plans = [o for o in found.objects if o.kind in PLANS]
    if not plans:
        raise InvalidData("the XPlanGML file holds no BP_Plan or FP_Plan (regional and other plans are not "
                          f"planning zones of the layer type {LAYER_TYPE})", parameter="file")
    if not found.zones:
        raise InvalidData(f"the XPlanGML file holds no areas that are planning zones (building, green, traffic, "
                          f"water, forest or agricultural areas); it holds {_counted(found.skipped)}", parameter="file")
    plan_of_area = {}
    for plan in plans:
        for area in plan.links.get("bereich", []):
            plan_of_area[area] = plan
    for area in (o for o in found.objects if o.kind in AREAS):
        for target in area.links.get("gehoertZuPlan", []):
            if target in by_id and by_id[target].kind in PLANS:
                plan_of_area[area.gml_id] = by_id[target]
    plan_props = {p.gml_id: _plan_properties(p) for p in plans}
    only = plans[0] if len(plans) == 1 else None

    def plan_of(zone: _Zone) -> _Object | None:
        return next((plan_of_area[a] for a in zone.areas if a in plan_of_area), only)

    issues: list[FeatureIssue] = []
    written: dict[str, _Zone] = {}  # by gml:id: the zones that go to the GeoPackage (those with a plan and an id)
    for zone in found.zones:
        plan = plan_of(zone)
        if plan is None:
            issues.append(FeatureIssue(zone.index, zone.gml_id, "plan_number",
                                       "belongs to no plan: its gehoertZuBereich names no area of a plan in the file"))
            continue
        problems = plan_props[plan.gml_id][1] + list(zone.problems)
        if zone.gml_id in written:
            problems.append(("id", f"duplicate feature id {zone.gml_id!r}"))
        elif zone.gml_id:
            written[zone.gml_id] = zone
        issues.extend(FeatureIssue(zone.index, zone.gml_id, prop, message) for prop, message in problems)
    srid = _srid(found.srs_name, given_crs)
    work = work or Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
    target = work / "zones.gpkg"
    positions = _write(path, target, written, lambda zone: plan_props[plan_of(zone).gml_id][0], srid, wrote)
    return Converted(target, positions, dict(found.skipped), found.version, found.curved), issues


def _counted(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counts.most_common(5)) or "nothing"


def _write(source: Path, target: Path, zones: dict[str, _Zone], plan_props: Callable[[_Zone], dict[str, Any]],
           srid: int, wrote: Callable[[int, int], Any] | None = None) -> list[int]:
    """The zones, each with the geometry GDAL reads from the file (joined by gml:id), written class by class in
    batches; returns the n-th written zone's index among the file's features. A zone GDAL does not return comes
    last, without geometry (the importer's check names it). `zones` is emptied as they are written."""
    positions: list[int] = []
    pending = zones  # those not yet written: each is released once written
    first = True
    total = len(zones)
    if wrote is not None:
        wrote(0, total)

    def flush(batch: list[tuple[_Zone, bytes | None]]) -> None:
        nonlocal first
        rows = [{"id": zone.gml_id, **plan_props(zone), **dict(zip(ZONE_FIELDS, zone.props, strict=True))}
                for zone, _ in batch]
        table = pa.table({name: _column([row.get(name) for row in rows], kind) for name, kind in COLUMNS}
                         | {"geometry": pa.array([wkb for _, wkb in batch], type=pa.binary())})
        pyogrio.write_arrow(table, target, layer="zones", driver="GPKG", geometry_name="geometry",
                            geometry_type="Unknown", crs=f"EPSG:{srid}", append=not first)
        positions.extend(zone.index for zone, _ in batch)
        first = False
        if wrote is not None:
            wrote(len(positions), total)

    try:
        for kind in sorted({zone.kind for zone in zones.values()}):
            with pyogrio.raw.open_arrow(source, layer=kind, columns=["gml_id"], batch_size=BATCH, use_pyarrow=True,
                                        **GML_OPTIONS) as (meta, reader):
                geometry = meta["geometry_name"] or "wkb_geometry"  # GDAL's name for an unnamed geometry
                for read in reader:
                    ids = read.column("gml_id").to_pylist()
                    # No such column: no object of the class has a geometry that GDAL reads.
                    has = read.schema.get_field_index(geometry) >= 0
                    wkb = read.column(geometry).to_pylist() if has else [None] * len(ids)
                    batch = [(pending.pop(i), g) for i, g in zip(ids, wkb, strict=True)
                             if i in pending and pending[i].kind == kind]
                    if batch:
                        flush(batch)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InvalidData(f"GDAL cannot read the file's geometries: {str(exc)[:300]}", parameter="file") from None
    rest = [(zone, None) for zone in pending.values()]
    for start in range(0, len(rest), BATCH):
        flush(rest[start:start + BATCH])
    if first:  # nothing to write: an empty layer, for the importer to find
        flush([])
    return positions


def _column(values: list[Any], kind: pa.DataType) -> pa.Array:
    """A column as its type, or as text when a value is not a number (the layer type's check names it)."""
    if any(isinstance(v, str) for v in values) and kind != pa.string():
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.array(values, type=kind)


def check_layer_type(name: str) -> None:
    if name != LAYER_TYPE:
        raise InvalidParameter(f"an XPlanGML file holds planning zones: import it into a collection of the layer "
                               f"type {LAYER_TYPE}, not {name}", parameter="file")


def _srid(srs_name: str | None, given: str | None) -> int:
    """The EPSG code to read the zones in: the one the import names (`crs`), else the file's srsName."""
    name = given or _crs_name(srs_name)
    if not name:
        raise InvalidParameter("the file's geometries name no srsName: give crs (for example EPSG:25832)",
                               parameter="crs")
    try:
        return resolve(name).srid
    except ValueError:
        raise InvalidParameter(f"{name!r} is not a CRS GeoTwin knows: give crs (for example EPSG:25832)"
                               if given else f"the file's srsName {name!r} is not a CRS GeoTwin knows: give crs "
                               "(for example EPSG:25832)", parameter="crs") from None
