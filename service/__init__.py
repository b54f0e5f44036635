"""GeoTwin: per-municipality planning, commercial-land and ecology layers served through OGC APIs."""

__version__ = "0.1.0"
