"""Biometric check-ins verified by the backend.

- `devices.trusted_biometrics`: an admin marks the devices whose app-computed
  embeddings are still accepted; from any other device they fail.
- `checkins.liveness` becomes optional (check-ins with camera frames carry none);
  `checkins.challenge` is the gesture echoed; `checkins.verdict` the verification's
  outcome (reasons, similarity, frame hashes for replay detection), NULL while pending.
- `checkin_frames`: frames waiting for verification, encrypted with the biometric key,
  deleted once verified.
- `checkin_requests.challenge`: the random gesture the request asked for.
- `biometric_photos`: enrolment photos, encrypted, kept only when a setting says so.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE devices ADD COLUMN trusted_biometrics boolean NOT NULL DEFAULT false;
ALTER TABLE checkins ALTER COLUMN liveness DROP NOT NULL;
ALTER TABLE checkins ADD COLUMN challenge text;
ALTER TABLE checkins ADD COLUMN verdict jsonb;
CREATE INDEX checkins_case_verdict_idx ON checkins (case_id, ts DESC) WHERE verdict IS NOT NULL;
ALTER TABLE checkin_requests ADD COLUMN challenge text;
CREATE TABLE checkin_frames (
    device_id uuid NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    case_id uuid,
    request_id text,
    challenge text,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, seq, ts)
);
CREATE INDEX checkin_frames_created_idx ON checkin_frames (created_at);
CREATE TABLE biometric_photos (
    id uuid PRIMARY KEY,
    subject_id uuid NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""
    )


def downgrade() -> None:
    op.execute(
        """
DROP TABLE biometric_photos;
DROP TABLE checkin_frames;
ALTER TABLE checkin_requests DROP COLUMN challenge;
DROP INDEX checkins_case_verdict_idx;
ALTER TABLE checkins DROP COLUMN verdict;
ALTER TABLE checkins DROP COLUMN challenge;
ALTER TABLE devices DROP COLUMN trusted_biometrics;
"""
    )
