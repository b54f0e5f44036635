"""MapLibre styles per layer type, coloured by the codes planners read (land use, availability, protection
category), with legends from the layer types' own labels."""

from __future__ import annotations

from typing import Any

from service.layertypes import LayerType

# Colours after the conventions of the Planzeichenverordnung where there is one.
PALETTES: dict[str, tuple[str, dict[str, str]]] = {
    "planning-zone": ("land_use", {
        "W": "#e58f84", "WS": "#f6cbbb", "WR": "#e07a6e", "WA": "#ee9f8f", "WB": "#f2b9a0",
        "M": "#d9a86f", "MD": "#e6c08f", "MDW": "#ecccaa", "MI": "#d6a066", "MU": "#c98f55", "MK": "#b8733f",
        "G": "#a0a0a0", "GE": "#b4b4b4", "GI": "#858585", "S": "#f6d07e", "SO": "#f3c05b",
        "GRUEN": "#8cc97a", "VERKEHR": "#e9e6dc",
        "WASSER": "#84c3ec", "WALD": "#4a945a", "LANDWIRTSCHAFT": "#e3dd9a"}),
    "commercial-site": ("availability", {
        "verfuegbar": "#2e9e4f", "reserviert": "#e0a030", "vermarktet": "#8a8a8a", "in_entwicklung": "#3f7fd0"}),
    "ecological-zone": ("category", {
        "NSG": "#1b7837", "LSG": "#9fd595", "FFH": "#4fa75a", "SPA": "#8c4fa0", "UESG": "#3d8ec9",
        "BIOTOP": "#c8a8d8", "ND": "#0b4d22", "WSG": "#8cc2e0"}),
}
DEFAULT_COLOUR = "#7a8a99"
POINT_COLOUR = "#d9822b"


def legend(layer: LayerType, present: set[str] | None = None) -> dict[str, Any]:
    """What each colour means: [{value, label, colour}], from the layer type's code list labels; only the codes
    `present` in the layer's features when that is known and not empty (planning zones have 21 codes; a
    collection uses a few)."""
    if layer.name not in PALETTES:
        return {"property": None, "items": [{"value": None, "label": layer.title, "colour": DEFAULT_COLOUR}]}
    prop, colours = PALETTES[layer.name]
    labels = layer.schema["properties"][prop].get("x-labels", {})
    shown = [v for v in colours if v in present] if present else list(colours)
    return {"property": prop,
            "items": [{"value": v, "label": labels.get(v, v), "colour": colours[v]} for v in shown]}


def coloured_by(layer: LayerType) -> str | None:
    """The property a layer type's colours follow, if any."""
    return PALETTES[layer.name][0] if layer.name in PALETTES else None


def _fill_colour(layer: LayerType) -> Any:
    if layer.name not in PALETTES:
        return DEFAULT_COLOUR
    prop, colours = PALETTES[layer.name]
    expr: list[Any] = ["match", ["get", prop]]
    for value, colour in colours.items():
        expr += [value, colour]
    return expr + [DEFAULT_COLOUR]


def layers_for(source: str, source_layer: str, layer: LayerType, title: str, minzoom: int) -> list[dict[str, Any]]:
    """MapLibre layers drawing one tile layer; metadata ties them to the collection for toggles and legends."""
    meta = {"geotwin:collection": source_layer, "geotwin:layerType": layer.name, "geotwin:title": title}
    base = {"source": source, "source-layer": source_layer, "minzoom": minzoom, "metadata": meta}
    polygons = ["in", ["geometry-type"], ["literal", ["Polygon", "MultiPolygon"]]]
    points = ["in", ["geometry-type"], ["literal", ["Point", "MultiPoint"]]]
    out = [
        {**base, "id": f"{source_layer}-fill", "type": "fill", "filter": polygons,
         "paint": {"fill-color": _fill_colour(layer), "fill-opacity": 0.45}},
        {**base, "id": f"{source_layer}-line", "type": "line", "filter": polygons,
         "paint": {"line-color": _fill_colour(layer), "line-width": 1.2}},
    ]
    if not layer.multi_polygon:
        out.append({**base, "id": f"{source_layer}-point", "type": "circle", "filter": points,
                    "paint": {"circle-radius": 5, "circle-color": POINT_COLOUR, "circle-stroke-color": "#ffffff",
                              "circle-stroke-width": 1.2}})
    return out


def style(name: str, tilejson_url: str, entries: list[tuple[str, LayerType, str, int]],
          bbox: tuple[float, float, float, float] | None, basemap: str = "",
          present: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """A MapLibre style over one vector tile source; entries are (tile layer, layer type, title, minzoom);
    `present`: the codes each tile layer's features use, for its legend."""
    layers: list[dict[str, Any]] = [{"id": "background", "type": "background",
                                     "paint": {"background-color": "#eef1ea"}}]
    for source_layer, layer, title, minzoom in entries:
        layers += layers_for("geotwin", source_layer, layer, title, minzoom)
    doc: dict[str, Any] = {
        "version": 8,
        "name": name,
        "sources": {"geotwin": {"type": "vector", "url": tilejson_url}},
        "layers": layers,
        "metadata": {
            "geotwin:legend": {source_layer: {"title": title, "layerType": layer.name,
                                              **legend(layer, (present or {}).get(source_layer)),
                                              "fields": layer.display_fields()}
                               for source_layer, layer, title, _ in entries},
            "geotwin:basemap": basemap or None,
        },
    }
    if bbox:
        doc["center"] = [(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2]
        doc["zoom"] = 10
        doc["metadata"]["geotwin:bbox"] = list(bbox)
    return doc
