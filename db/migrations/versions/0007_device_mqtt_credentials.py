"""Device broker credentials: each device's MQTT password, hashed.

`mqtt_password_hash` is mosquitto's PBKDF2-SHA512 hash (`$7$…`, devices/mqtt_auth.py) of
the password issued when the device was registered (shown once) or last rotated; the
broker's password file is rebuilt from it. NULL: the device has no broker account (it
was registered before credentials existed: rotate to issue one).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE devices ADD COLUMN mqtt_password_hash text;
ALTER TABLE devices ADD COLUMN mqtt_password_set_at timestamptz;
"""
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE devices DROP COLUMN mqtt_password_set_at, DROP COLUMN mqtt_password_hash;"
    )
