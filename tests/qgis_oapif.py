"""Run by Debian's python3 (QGIS's bindings live there): open an OGC API – Features collection with QGIS's
OAPIF provider and put its features into a target CRS the way a QGIS project in that CRS does. Prints JSON:
validity, the layer's CRS, and per feature id its first vertex in the target CRS and its area there.

QGIS 3.22 (Debian bookworm) reads OGC API – Features in CRS84 only; QGIS >= 3.28 asks the server for the
collection's storageCrs itself (Part 2).

A fourth argument is a key: it goes into a *Basic* authentication configuration as the password, the way a
planner with QGIS 3.22 (which has no API header method) sets it up."""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsAuthMethodConfig,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsVectorLayer,
)


def main() -> None:
    root, collection, target = sys.argv[1:4]
    app = QgsApplication([], False)
    app.initQgis()
    auth = ""
    if len(sys.argv) > 4:
        manager = QgsApplication.authManager()
        manager.setMasterPassword("test-master-password", True)
        config = QgsAuthMethodConfig("Basic")
        config.setName("GeoTwin")
        config.setConfig("username", "planer")
        config.setConfig("password", sys.argv[4])
        stored, config = manager.storeAuthenticationConfig(config)
        assert stored, "QGIS did not store the authentication configuration"
        auth = f" authcfg='{config.id()}'"
    layer = QgsVectorLayer(f"url='{root}' typename='{collection}' pagingEnabled='true'{auth}", collection, "OAPIF")
    out = {"valid": layer.isValid(), "crs": layer.crs().authid(), "features": {}}
    if layer.isValid():
        to_target = QgsCoordinateTransform(layer.crs(), QgsCoordinateReferenceSystem(target), QgsProject.instance())
        for feature in layer.getFeatures():
            geom = feature.geometry()
            geom.transform(to_target)
            first = geom.vertexAt(0)
            out["features"][str(feature["id"])] = {"first": [first.x(), first.y()], "area": geom.area()}
    print(json.dumps(out), flush=True)
    # Skip QGIS's teardown: with a network provider loaded it can crash on exit, after the answer is out.
    os._exit(0)


if __name__ == "__main__":
    main()
