"""an AGS has 5 or 8 digits in the database too, as the API and the CLI have always required

Migration 0001 allowed 5 to 8 digits, so psql could write a 6- or 7-digit key that is neither a municipality's
(8) nor a district's (5), and whose Land the service would read from its first two digits all the same. Keys
stored so are left as they are and named in a warning (the upgrade runs when the service starts, and must not
keep it from starting); the check holds for every new or changed municipality, and a change to such a row
must correct its key.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-23
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.models import AGS_PATTERN

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bad = op.get_bind().execute(sa.text("SELECT slug, ags FROM municipality WHERE ags !~ :pattern ORDER BY slug"),
                                {"pattern": AGS_PATTERN}).all()
    op.drop_constraint(op.f("ck_municipality_ags_format"), "municipality", type_="check")
    op.create_check_constraint(op.f("ck_municipality_ags_format"), "municipality", f"ags ~ '{AGS_PATTERN}'",
                               postgresql_not_valid=bool(bad))
    if bad:
        listed = ", ".join(f"{slug} ({ags})" for slug, ags in bad)
        logging.getLogger("alembic.runtime.migration").warning(
            "an AGS has 8 digits (a municipality's) or 5 (a district's); correct these with psql: %s", listed)


def downgrade() -> None:
    op.drop_constraint(op.f("ck_municipality_ags_format"), "municipality", type_="check")
    op.create_check_constraint(op.f("ck_municipality_ags_format"), "municipality", "ags ~ '^[0-9]{5,8}$'")
