"""Run by Debian's python3 (QGIS's bindings live there): load vector tile layers from GeoTwin into QGIS and
render them. Prints JSON: per layer whether QGIS found it valid and how many pixels it painted."""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsRectangle,
    QgsVectorTileLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


def painted(image) -> int:
    white = QColor(255, 255, 255).rgb()
    return sum(1 for x in range(0, image.width(), 2) for y in range(0, image.height(), 2)
               if image.pixel(x, y) != white)


def main() -> None:
    templates, extent = json.loads(sys.argv[1]), [float(v) for v in sys.argv[2].split(",")]
    app = QgsApplication([], False)
    app.initQgis()
    out = {}
    for name, template in templates.items():
        layer = QgsVectorTileLayer(f"type=xyz&url={template}&zmin=0&zmax=20", name)
        result = {"valid": layer.isValid(), "painted": 0}
        if layer.isValid():
            settings = QgsMapSettings()
            settings.setLayers([layer])
            settings.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
            settings.setExtent(QgsRectangle(*extent))
            settings.setOutputSize(QSize(400, 400))
            settings.setBackgroundColor(QColor(255, 255, 255))
            job = QgsMapRendererSequentialJob(settings)
            job.start()
            job.waitForFinished()
            result["painted"] = painted(job.renderedImage())
        out[name] = result
    print(json.dumps(out))
    app.exitQgis()


if __name__ == "__main__":
    main()
