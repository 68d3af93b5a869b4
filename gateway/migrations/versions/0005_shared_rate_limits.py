"""many processes: rate limits counted in the database (rate_limit_hits), on PostgreSQL

Revision ID: 0005
Revises: 0004

`rate_limit_hits` holds, per API key, the times (epoch seconds, the database's clock) of the requests counted in its
rate-limit window (gateway/shared_limits.py). Only gateways on PostgreSQL count there (SQLite serves one process,
which counts in memory), so the table is made on PostgreSQL only. It is UNLOGGED: a count is written without waiting
for the WAL to reach the disk (0.15 ms a request instead of 1.1 ms here), and what it loses in a crash of the
database (it is emptied then, and not copied to standbys) is a minute of counts, not money.
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.create_table(
        'rate_limit_hits',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('hits', postgresql.ARRAY(sa.Float(precision=53)), nullable=False),
        sa.PrimaryKeyConstraint('key'),
        prefixes=['UNLOGGED'],
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.drop_table('rate_limit_hits')
