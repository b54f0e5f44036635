"""The tables, as SQLAlchemy 2 + GeoAlchemy2 metadata: what Alembic's migrations build and are checked against.

One `feature` table holds every layer of every municipality. Geometry is stored in one metric CRS
(`STORAGE_SRID`, ETRS89 / UTM 32N) so that a regional query over Halle (25832) and Leipzig (25833) is a
single index scan; sources arriving in 25833 are transformed on the way in. Properties are JSONB, checked
against the collection's layer type on every write, with a GIN index for equality filters and expression
indexes on the layer types' sortable keys. Validity dates are real columns so `datetime` uses a b-tree.
"""

from __future__ import annotations

from datetime import date, datetime

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STORAGE_SRID = 25832
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
# A municipality's AGS has 8 digits (15002000), a district's 5 (15088); the Land is its first two.
AGS_PATTERN = r"^([0-9]{5}|[0-9]{8})$"

# Properties with a b-tree expression index, as (property, kind). The query builder uses the same
# expression (`property_expr`), so the index is hit. Numbers go through `geotwin_num`, which is null for
# a non-number (created by migration 0001), so a generic layer with an odd value under the same key can never
# make a write fail.
INDEXED_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("area_net_ha", "number"),
    ("area_gross_ha", "number"),
    ("availability", "text"),
    ("category", "text"),
    ("land_use", "text"),
)


# Pre-simplified geometry for lower zooms, kept by the database itself (stored generated columns, so every
# write from any client keeps them right). Only shapes with many vertices get one; the others read `geom`.
# Level 1 serves tiles whose grid unit is >= 12 m (WebMercatorQuad z <= 9), 2 >= 3 m (z <= 11), 3 >= 0.75 m
# (z <= 13). Each level also exists already reprojected to Web Mercator (geom_wm<n>): reprojecting was most of
# a heavy tile's cost (a z8 tile of 3,250 zones: 240 ms with ST_Transform, ~25 ms without).
LOD_LEVELS = ((1, 24.0, 12.0), (2, 6.0, 3.0), (3, 1.5, 0.75))  # (level, tolerance m, minimum grid unit m)


def lod_sql(tolerance: float, srid: int | None = None) -> str:
    simplified = f"ST_SimplifyPreserveTopology(geom, {tolerance})"
    if srid is not None:
        simplified = f"ST_Transform({simplified}, {srid})"
    return f"CASE WHEN ST_NPoints(geom) > 64 THEN {simplified} END"


def property_expr(name: str, kind: str, alias: str = "") -> str:
    """The SQL expression for a property, as the expression indexes spell it. `name` must be a known key."""
    col = f"{alias}.properties" if alias else "properties"
    quoted = "'" + name.replace("'", "''") + "'"
    if kind in ("number", "integer"):
        return f"geotwin_num({col} -> {quoted})"
    return f"({col} ->> {quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Municipality(Base):
    __tablename__ = "municipality"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(Text)
    ags: Mapped[str] = mapped_column(String(8), unique=True, comment="Amtlicher Gemeindeschlüssel")
    state: Mapped[str] = mapped_column(Text)
    crs: Mapped[int] = mapped_column(Integer, comment="official CRS (EPSG code) its data arrives in")
    extent = mapped_column(Geometry("POLYGON", srid=4326, spatial_index=False), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint(f"slug ~ '{SLUG_PATTERN}'", name="slug_format"),
        CheckConstraint(f"ags ~ '{AGS_PATTERN}'", name="ags_format"),
    )


class Collection(Base):
    __tablename__ = "collection"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    municipality_id: Mapped[int] = mapped_column(ForeignKey("municipality.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(63), comment="the collectionId in URLs")
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, server_default="")
    layer_type: Mapped[str] = mapped_column(String(63))
    licence: Mapped[str] = mapped_column(Text, server_default="")
    attribution: Mapped[str] = mapped_column(Text, server_default="")
    keywords: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    visibility: Mapped[str] = mapped_column(String(8), server_default="public")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    version: Mapped[int] = mapped_column(BigInteger, server_default="1",
                                         comment="bumped by every data change; caches and feeds key on it")
    # Kept up by the feature trigger on every data change (migrations 0012, 0013) so metadata never scans
    # features.
    feature_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    bbox: Mapped[list[float] | None] = mapped_column(ARRAY(Float), nullable=True,
                                                     comment="minx, miny, maxx, maxy in CRS84")
    storage_box: Mapped[list[float] | None] = mapped_column(
        ARRAY(Float), nullable=True,
        comment="minx, miny, maxx, maxy in the storage CRS: the exact extent `bbox` is derived from")
    temporal_start: Mapped[date | None] = mapped_column(Date, nullable=True)
    temporal_end: Mapped[date | None] = mapped_column(Date, nullable=True)
    history_from: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True,
        comment="`geotwin history prune`: the change log holds the collection as it was from this time on")
    history_pruned_through: Mapped[int] = mapped_column(
        BigInteger, server_default="0", comment="the highest change id pruned; a feed reader behind it must resync")

    __table_args__ = (
        UniqueConstraint("municipality_id", "slug"),
        CheckConstraint(f"slug ~ '{SLUG_PATTERN}'", name="slug_format"),
        CheckConstraint("visibility IN ('public', 'internal')", name="visibility_values"),
    )


class Feature(Base):
    __tablename__ = "feature"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collection.id", ondelete="CASCADE"))
    fid: Mapped[str] = mapped_column(Text, comment="the featureId in URLs, unique in its collection")
    geom = mapped_column(Geometry("GEOMETRY", srid=STORAGE_SRID, spatial_index=False), nullable=False)
    geom_lod1 = mapped_column(Geometry("GEOMETRY", srid=STORAGE_SRID, spatial_index=False),
                              Computed(lod_sql(LOD_LEVELS[0][1]), persisted=True), nullable=True)
    geom_lod2 = mapped_column(Geometry("GEOMETRY", srid=STORAGE_SRID, spatial_index=False),
                              Computed(lod_sql(LOD_LEVELS[1][1]), persisted=True), nullable=True)
    geom_lod3 = mapped_column(Geometry("GEOMETRY", srid=STORAGE_SRID, spatial_index=False),
                              Computed(lod_sql(LOD_LEVELS[2][1]), persisted=True), nullable=True)
    geom_wm1 = mapped_column(Geometry("GEOMETRY", srid=3857, spatial_index=False),
                             Computed(lod_sql(LOD_LEVELS[0][1], 3857), persisted=True), nullable=True)
    geom_wm2 = mapped_column(Geometry("GEOMETRY", srid=3857, spatial_index=False),
                             Computed(lod_sql(LOD_LEVELS[1][1], 3857), persisted=True), nullable=True)
    geom_wm3 = mapped_column(Geometry("GEOMETRY", srid=3857, spatial_index=False),
                             Computed(lod_sql(LOD_LEVELS[2][1], 3857), persisted=True), nullable=True)
    properties: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    valid_from: Mapped[date | None] = mapped_column(Date, nullable=True)
    valid_to: Mapped[date | None] = mapped_column(Date, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The id of the row's last change (one sequence for all writes, migration 0007): the feature's ETag and
    # its position in the change feed. A BEFORE UPDATE trigger takes a new one on every update.
    change_id: Mapped[int] = mapped_column(BigInteger, server_default=text("nextval('feature_change_seq')"))

    __table_args__ = (
        UniqueConstraint("collection_id", "fid"),
        CheckConstraint("valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from",
                        name="validity_order"),
        # Led by the collection (btree_gist, migration 0006): a tile or bbox query reads only its own rows.
        Index("ix_feature_collection_id_geom", "collection_id", "geom", postgresql_using="gist"),
        # Paging in insertion order within a collection, without walking other collections' rows.
        Index("ix_feature_collection_id_id", "collection_id", "id"),
        Index("ix_feature_properties", "properties", postgresql_using="gin",
              postgresql_ops={"properties": "jsonb_path_ops"}),
        Index("ix_feature_validity", "collection_id", "valid_from", "valid_to"),
        *(
            Index(f"ix_feature_p_{prop}", "collection_id", text(property_expr(prop, kind)))
            for prop, kind in INDEXED_PROPERTIES
        ),
    )


class LayerTypeRow(Base):
    """Each layer type's validity keys, in step with `schemas/` (`service.layertypes.sync_layer_types`): the
    trigger that sets a feature's validity columns for writers other than the service reads them (0015)."""

    __tablename__ = "layer_type"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    validity_start: Mapped[str | None] = mapped_column(
        Text, nullable=True, comment="the property holding the start of a feature's validity (schemas/: "
                                     "x-geotwin.validity)")
    validity_end: Mapped[str | None] = mapped_column(Text, nullable=True)


class ApiKey(Base):
    """A municipality's API key (or a platform administrator's, without municipality). Only a hash is kept."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    municipality_id: Mapped[int | None] = mapped_column(ForeignKey("municipality.id", ondelete="CASCADE"),
                                                        nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(Text, server_default="")
    prefix: Mapped[str] = mapped_column(String(16), unique=True, comment="public part, to find the key")
    secret_hash: Mapped[bytes] = mapped_column(BYTEA, comment="SHA-256 of the whole key")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        CheckConstraint("role IN ('viewer', 'editor', 'admin', 'platform')", name="role_values"),
        CheckConstraint("(role = 'platform') = (municipality_id IS NULL)", name="platform_scope"),
    )


class FeatureChange(Base):
    """Every feature write, as the row looked after it (a delete has no geometry): who, when, what.
    Written by statement triggers (migration 0007), whichever client writes."""

    __tablename__ = "feature_change"

    change_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collection.id", ondelete="CASCADE"))
    fid: Mapped[str] = mapped_column(Text)
    op: Mapped[str] = mapped_column(String(1), comment="I insert, U update, D delete")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    actor: Mapped[str] = mapped_column(Text, comment="key label or token subject; db user otherwise")
    geom = mapped_column(Geometry("GEOMETRY", srid=STORAGE_SRID, spatial_index=False), nullable=True)
    properties: Mapped[dict | None] = mapped_column(JSONB, nullable=True)
    valid_from: Mapped[date | None] = mapped_column(Date, nullable=True)
    valid_to: Mapped[date | None] = mapped_column(Date, nullable=True)

    __table_args__ = (
        CheckConstraint("op IN ('I', 'U', 'D')", name="op_values"),
        Index("ix_feature_change_collection_id_change_id", "collection_id", "change_id"),
        Index("ix_feature_change_collection_id_fid_change_id", "collection_id", "fid", "change_id"),
    )


class MirrorCursor(Base):
    """A collection mirrored from another GeoTwin: its source and the last change applied (its id and when the
    source made it, so that a source restored from an older backup, which hands the id out again, is noticed)."""

    __tablename__ = "mirror_cursor"

    collection_id: Mapped[int] = mapped_column(ForeignKey("collection.id", ondelete="CASCADE"), primary_key=True,
                                               autoincrement=False)
    source: Mapped[str] = mapped_column(Text, comment="the source collection's URL")
    last_change_id: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_change_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="when the source made the last change applied (its `at`)")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ImportJob(Base):
    """A file import started through the API: its status, progress and report, readable from any worker. A job
    whose heartbeat stops (the process died) is reported failed; its transaction never committed."""

    __tablename__ = "import_job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collection.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    source: Mapped[str] = mapped_column(Text, comment="the uploaded file's name")
    options: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    processed: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total: Mapped[int] = mapped_column(BigInteger, server_default="0")
    stage: Mapped[str | None] = mapped_column(Text, nullable=True,
                                              comment="reading, converting (an XPlanGML file) or checking")
    report: Mapped[dict | None] = mapped_column(JSONB, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(Text, server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="status_values"),)


class ProcessJob(Base):
    """An asynchronous run of a planning tool (OGC API – Processes job): status, result and error, readable from
    any worker. A job whose heartbeat stops (the process died) is reported failed."""

    __tablename__ = "process_job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    process_id: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16), server_default="accepted")
    owner: Mapped[str] = mapped_column(Text, server_default="",
                                       comment="who started it (key or token subject); empty for anonymous callers")
    inputs: Mapped[dict] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    message: Mapped[str] = mapped_column(Text, server_default="")
    error_status: Mapped[int | None] = mapped_column(SmallInteger, nullable=True,
                                                     comment="HTTP status of a failed job's error")
    result: Mapped[bytes | None] = mapped_column(BYTEA, nullable=True)
    media_type: Mapped[str | None] = mapped_column(Text, nullable=True)
    filename: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("status IN ('accepted', 'running', 'successful', 'failed', 'dismissed')",
                        name="status_values"),
        Index("ix_process_job_owner_created_at", "owner", "created_at"),
    )
