"""Bump config_versions('zones') on every change the geofence engine must see.

The ingest workers cache the compiled zones registry and rebuild it when this
version moves. Triggers (not application code) bump it, so a case closed, a zone
edited in SQL, or an attachment made by any client all reach the next batch.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE FUNCTION bump_zones_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE config_versions SET version = version + 1, updated_at = now() WHERE name = 'zones';
    RETURN NULL;
END $$;
CREATE TRIGGER zones_bump_version AFTER INSERT OR UPDATE OR DELETE ON zones
    FOR EACH STATEMENT EXECUTE FUNCTION bump_zones_version();
CREATE TRIGGER case_zones_bump_version AFTER INSERT OR UPDATE OR DELETE ON case_zones
    FOR EACH STATEMENT EXECUTE FUNCTION bump_zones_version();
CREATE TRIGGER cases_bump_version AFTER INSERT OR DELETE OR UPDATE OF status, timezone ON cases
    FOR EACH STATEMENT EXECUTE FUNCTION bump_zones_version();
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP TRIGGER zones_bump_version ON zones;
DROP TRIGGER case_zones_bump_version ON case_zones;
DROP TRIGGER cases_bump_version ON cases;
DROP FUNCTION bump_zones_version();
"""
    )
