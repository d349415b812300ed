"""instances unique per series: (series_id, sop_instance_uid, revision)

The spool numbers revisions per series folder, so the same SOP Instance UID sent in a second
series is revision 0 again; the old key (sop_instance_uid, revision) refused it and blocked the
recorder's batch and the node's start-up recovery.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_NAME = "uq_instances_series_sop_revision"
NEW_COLUMNS = ["series_id", "sop_instance_uid", "revision"]
OLD_COLUMNS = ["sop_instance_uid", "revision"]
# SQLite keeps 0001's constraint unnamed; batch mode names reflected constraints by this.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
OLD_SQLITE_NAME = "uq_instances_sop_instance_uid_revision"


def _constraint_name(columns: list[str]) -> str | None:
    """The name of the unique constraint on exactly ``columns`` (None: unnamed or absent)."""
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints("instances"):
        if sorted(constraint["column_names"]) == sorted(columns):
            return constraint["name"] or OLD_SQLITE_NAME
    return None


def _swap(drop_columns: list[str], drop_fallback: str, add_name: str, add_columns: list[str]) -> None:
    old = _constraint_name(drop_columns) or drop_fallback
    # recreate="auto": SQLite copies the table (it cannot drop a constraint), PostgreSQL alters it.
    with op.batch_alter_table("instances", naming_convention=NAMING) as batch:
        batch.drop_constraint(old, type_="unique")
        batch.create_unique_constraint(add_name, add_columns)


def upgrade() -> None:
    _swap(OLD_COLUMNS, OLD_SQLITE_NAME, NEW_NAME, NEW_COLUMNS)


def downgrade() -> None:
    # Fails while one SOP Instance UID is recorded in two series: that is what 0002 allows.
    _swap(NEW_COLUMNS, NEW_NAME, OLD_SQLITE_NAME, OLD_COLUMNS)
