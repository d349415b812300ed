"""job leases: lease_token, lease_expires_at, lost_deliveries

A delivery that runs a job holds a lease its worker renews; a sweeper requeues jobs whose lease
expired (worker killed, out of memory, past the hard time limit) and fails them after
``max_deliveries`` lost deliveries. Jobs already in a running state get an expired lease, so
the first sweep takes back those that were stuck before this revision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEX = "ix_jobs_lease_expires_at"
IN_FLIGHT = ("running", "results_written", "sent")


def upgrade() -> None:
    # recreate="auto": SQLite copies the table only when it must; PostgreSQL alters it.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_token", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lost_deliveries", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index(INDEX, ["lease_expires_at"], unique=False)
    jobs = sa.table(
        "jobs",
        sa.column("state", sa.String(16)),
        sa.column("lease_token", sa.String(128)),
        sa.column("lease_expires_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        jobs.update()
        .where(jobs.c.state.in_(IN_FLIGHT))
        .values(lease_token="pre-0003", lease_expires_at=datetime.now(UTC))
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(INDEX)
        batch.drop_column("lost_deliveries")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_token")
