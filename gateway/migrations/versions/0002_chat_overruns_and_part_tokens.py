"""chat: reservations record an overrun; models may price content parts the gateway cannot count

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('overrun_micros', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_part_tokens', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('content_part_tokens')
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_column('overrun_micros')
