"""security: invitations record who issued them, their revocation and failed attempts; signing keys are sealed;
audit events are indexed by actor type and time for the retention purge

Revision ID: 0003
Revises: 0002

The private signing keys keep their values in the renamed column; the gateway seals any plain one at start-up
(gateway/secrets_at_rest.py), where the key-encryption key is at hand. A downgrade leaves them sealed.
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('invited_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('failed_attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index('ix_invitations_invited_by', ['invited_by'], unique=False)
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.alter_column('private_pem', new_column_name='private_key_sealed', existing_type=sa.Text(),
                              existing_nullable=False)
    op.create_index('ix_audit_actor_type_at', 'audit_events', ['actor_type', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_actor_type_at', table_name='audit_events')
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.alter_column('private_key_sealed', new_column_name='private_pem', existing_type=sa.Text(),
                              existing_nullable=False)
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_index('ix_invitations_invited_by')
        batch_op.drop_column('failed_attempts')
        batch_op.drop_column('revoked_at')
        batch_op.drop_column('invited_by')
