"""Writes one export file with GDAL, in a process of its own: `python -m service.gdalwriter '<spec>'`.

The worker sends the rows as an Arrow IPC stream on stdin (service.export.gdal_stream). GDAL holds the GIL while it
writes a GeoPackage (and while it finishes it: the spatial index, the commit). In a thread of the worker that
stopped every other request of the worker for as long: 2.7 s at the end of a GeoPackage of 1,000,000 sites. Here
it holds only this process.

On failure it exits with status 3 and writes the reason as the last line of stderr, as JSON: {"message": ...}.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from typing import Any


def zip_parts(directory: str, layer: str) -> str:
    """A Shapefile's parts in one zip beside them (written from the files: memory stays flat). Level 1: for
    200,000 sites 5.3–7.5 s and 24.7 MB, against 7.7–8.1 s and 21.5 MB at the default level."""
    parts = sorted(os.listdir(directory))
    path = os.path.join(directory, f"{layer}.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name in parts:
            archive.write(os.path.join(directory, name), name)
    return path


def write(spec: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyogrio

    reader = pa.ipc.open_stream(sys.stdin.buffer)
    pyogrio.write_arrow(reader, spec["path"], layer=spec["layer"], driver=spec["driver"], geometry_name="geometry",
                        geometry_type=spec["geometry_type"], crs=spec["crs"], layer_options=spec["layer_options"],
                        dataset_options=spec["dataset_options"])
    if spec["driver"] == "ESRI Shapefile":
        zip_parts(os.path.dirname(spec["path"]), spec["layer"])


def main() -> None:
    try:
        write(json.loads(sys.argv[1]))
    except Exception as exc:  # noqa: BLE001 - whatever GDAL or the disk says goes to the worker
        sys.stderr.write("\n" + json.dumps({"message": str(exc) or exc.__class__.__name__}) + "\n")
        sys.exit(3)


if __name__ == "__main__":
    main()
