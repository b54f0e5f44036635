"""municipalities, collections and features

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 01:46:09.680761
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

# Frozen here (not imported from the models) so this revision never changes after release.
NUM_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION geotwin_num(j jsonb) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$ SELECT CASE WHEN jsonb_typeof(j) = 'number' THEN j::double precision END $$
"""

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.execute(NUM_FUNCTION_SQL)
    op.create_geospatial_table('municipality',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('slug', sa.String(length=63), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('ags', sa.String(length=8), nullable=False, comment='Amtlicher Gemeindeschlüssel'),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('crs', sa.Integer(), nullable=False, comment='official CRS (EPSG code) its data arrives in'),
    sa.Column('extent', Geometry(geometry_type='POLYGON', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("ags ~ '^[0-9]{5,8}$'", name=op.f('ck_municipality_ags_format')),
    sa.CheckConstraint("slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'", name=op.f('ck_municipality_slug_format')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_municipality')),
    sa.UniqueConstraint('ags', name=op.f('uq_municipality_ags')),
    sa.UniqueConstraint('slug', name=op.f('uq_municipality_slug'))
    )
    op.create_table('collection',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('municipality_id', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=63), nullable=False, comment='the collectionId in URLs'),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('layer_type', sa.String(length=63), nullable=False),
    sa.Column('licence', sa.Text(), server_default='', nullable=False),
    sa.Column('attribution', sa.Text(), server_default='', nullable=False),
    sa.Column('keywords', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('visibility', sa.String(length=8), server_default='public', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('version', sa.BigInteger(), server_default='1', nullable=False, comment='bumped by every data change; caches and feeds key on it'),
    sa.Column('feature_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('bbox', postgresql.ARRAY(sa.Float()), nullable=True, comment='minx, miny, maxx, maxy in CRS84'),
    sa.Column('temporal_start', sa.Date(), nullable=True),
    sa.Column('temporal_end', sa.Date(), nullable=True),
    sa.CheckConstraint("slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'", name=op.f('ck_collection_slug_format')),
    sa.CheckConstraint("visibility IN ('public', 'internal')", name=op.f('ck_collection_visibility_values')),
    sa.ForeignKeyConstraint(['municipality_id'], ['municipality.id'], name=op.f('fk_collection_municipality_id_municipality'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_collection')),
    sa.UniqueConstraint('municipality_id', 'slug', name=op.f('uq_collection_municipality_id_slug'))
    )
    op.create_geospatial_table('feature',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('collection_id', sa.Integer(), nullable=False),
    sa.Column('fid', sa.Text(), nullable=False, comment='the featureId in URLs, unique in its collection'),
    sa.Column('geom', Geometry(srid=25832, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('properties', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=True),
    sa.Column('valid_to', sa.Date(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from', name=op.f('ck_feature_validity_order')),
    sa.ForeignKeyConstraint(['collection_id'], ['collection.id'], name=op.f('fk_feature_collection_id_collection'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feature')),
    sa.UniqueConstraint('collection_id', 'fid', name=op.f('uq_feature_collection_id_fid'))
    )
    op.create_geospatial_index('ix_feature_geom', 'feature', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_index('ix_feature_p_area_gross_ha', 'feature', ['collection_id', sa.literal_column("geotwin_num(properties -> 'area_gross_ha')")], unique=False)
    op.create_index('ix_feature_p_area_net_ha', 'feature', ['collection_id', sa.literal_column("geotwin_num(properties -> 'area_net_ha')")], unique=False)
    op.create_index('ix_feature_p_availability', 'feature', ['collection_id', sa.literal_column("(properties ->> 'availability')")], unique=False)
    op.create_index('ix_feature_p_category', 'feature', ['collection_id', sa.literal_column("(properties ->> 'category')")], unique=False)
    op.create_index('ix_feature_p_land_use', 'feature', ['collection_id', sa.literal_column("(properties ->> 'land_use')")], unique=False)
    op.create_index('ix_feature_properties', 'feature', ['properties'], unique=False, postgresql_using='gin', postgresql_ops={'properties': 'jsonb_path_ops'})
    op.create_index('ix_feature_validity', 'feature', ['collection_id', 'valid_from', 'valid_to'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_feature_validity', table_name='feature')
    op.drop_index('ix_feature_properties', table_name='feature', postgresql_using='gin', postgresql_ops={'properties': 'jsonb_path_ops'})
    op.drop_index('ix_feature_p_land_use', table_name='feature')
    op.drop_index('ix_feature_p_category', table_name='feature')
    op.drop_index('ix_feature_p_availability', table_name='feature')
    op.drop_index('ix_feature_p_area_net_ha', table_name='feature')
    op.drop_index('ix_feature_p_area_gross_ha', table_name='feature')
    op.drop_geospatial_index('ix_feature_geom', table_name='feature', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('feature')
    op.drop_table('collection')
    op.drop_geospatial_table('municipality')
    op.execute("DROP FUNCTION IF EXISTS geotwin_num(jsonb)")
