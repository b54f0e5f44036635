"""Run by Debian's python3 (QGIS's bindings live there): edit GeoTwin's `feature` table with QGIS's PostgreSQL
provider, as a planner does with the table loaded from a PostGIS connection. Adds a feature, then changes its
properties and geometry, each as one commit. Unset fields get the provider's default clauses, as QGIS's
attribute form fills them in. Prints JSON: whether the layer opened and whether each commit succeeded, with
QGIS's messages.

Arguments: port, database, collection pk, feature id."""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import QgsApplication, QgsFeature, QgsGeometry, QgsVectorLayer  # noqa: E402

SQUARE = "MULTIPOLYGON((({x} 5706000,{x2} 5706000,{x2} 5706100,{x} 5706100,{x} 5706000)))"


def main() -> None:
    port, database, collection, fid = sys.argv[1:5]
    app = QgsApplication([], False)
    app.initQgis()
    layer = QgsVectorLayer(f"dbname='{database}' host=127.0.0.1 port={port} user='geotwin' key='id' srid=25832 "
                           'type=MultiPolygon table="public"."feature" (geom)', "feature", "postgres")
    out = {"valid": layer.isValid()}
    if layer.isValid():
        provider = layer.dataProvider()
        layer.startEditing()
        feature = QgsFeature(layer.fields())
        for i in range(len(layer.fields())):
            if provider.defaultValueClause(i):
                feature.setAttribute(i, provider.defaultValueClause(i))
        feature["collection_id"] = int(collection)
        feature["fid"] = fid
        feature["properties"] = {"name": "Aus QGIS", "area_gross_ha": 1.0, "zoning": "GE",
                                 "availability": "verfuegbar", "servicing": "erschlossen"}
        feature.setGeometry(QgsGeometry.fromWkt(SQUARE.format(x=706000, x2=706100)))
        layer.addFeature(feature)
        out["added"] = layer.commitChanges()
        out["add_messages"] = layer.commitErrors()
        layer.startEditing()
        for row in layer.getFeatures(f"collection_id = {int(collection)} AND fid = '{fid}'"):
            layer.changeAttributeValue(row.id(), layer.fields().indexOf("properties"), {
                "name": "Geändert in QGIS", "area_gross_ha": 2.0, "zoning": "GE", "availability": "reserviert",
                "servicing": "erschlossen"})
            layer.changeGeometry(row.id(), QgsGeometry.fromWkt(SQUARE.format(x=706000, x2=706200)))
        out["changed"] = layer.commitChanges()
        out["change_messages"] = layer.commitErrors()
    print(json.dumps(out), flush=True)
    # Skip QGIS's teardown: with a provider loaded it can crash on exit, after the answer is out.
    os._exit(0)


if __name__ == "__main__":
    main()
