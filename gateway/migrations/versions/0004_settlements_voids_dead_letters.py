"""billing: charges can be voided (reservations.voided_micros); settlements that never applied become dead letters

Revision ID: 0004
Revises: 0003

A reservation's `voided_micros` is what platform admins gave back of its charge (null: nothing); a charge voided in
full reads as status `voided`. `settlement_dead_letters` keeps the settlements of the journal
(gateway/services/settlements.py) that kept failing, until a platform admin replays them.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('voided_micros', sa.BigInteger(), nullable=True))
    op.create_table(
        'settlement_dead_letters',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('reservation_id', sa.String(length=64), nullable=False),
        sa.Column('account_id', sa.String(length=64), nullable=True),
        sa.Column('org', sa.String(length=100), nullable=True),
        sa.Column('request_id', sa.String(length=128), nullable=True),
        sa.Column('amount_micros', sa.BigInteger(), nullable=False),
        sa.Column('settlement', sa.JSON(), nullable=False),
        sa.Column('error', sa.Text(), nullable=False),
        sa.Column('tries', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('replayed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('replayed_by', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('settlement_dead_letters', schema=None) as batch_op:
        batch_op.create_index('ix_settlement_dead_letters_state', ['state'], unique=False)
        batch_op.create_index('ix_settlement_dead_letters_reservation_id', ['reservation_id'], unique=False)


def downgrade() -> None:
    op.drop_table('settlement_dead_letters')
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_column('voided_micros')
