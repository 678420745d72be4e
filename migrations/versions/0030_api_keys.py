"""API keys, and the supporter (updated_at, id) index the API pages people by

Revision ID: 0030
Revises: 0021
Create Date: 2026-12-03 14:30:00

GET /api/v1/people orders by (updated_at, id) and filters `modified_date gt ...`; without an
index PostgreSQL sorted every matching supporter for each page. CONCURRENTLY on PostgreSQL,
so signing goes on while it is built (if the build fails, drop the INVALID index and upgrade
again).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0030'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('api_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('scope', sa.String(length=20), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('token_prefix', sa.String(length=16), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['staff_user.id'], name=op.f('fk_api_key_created_by_id_staff_user'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['revoked_by_id'], ['staff_user.id'], name=op.f('fk_api_key_revoked_by_id_staff_user'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_key')),
    sa.UniqueConstraint('label', name=op.f('uq_api_key_label')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_key_token_hash'))
    )
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute("CREATE INDEX CONCURRENTLY ix_supporter_updated_at_id ON supporter (updated_at, id)")
    else:
        op.create_index("ix_supporter_updated_at_id", "supporter", ["updated_at", "id"], unique=False)


def downgrade():
    op.drop_index("ix_supporter_updated_at_id", table_name="supporter")
    op.drop_table('api_key')
