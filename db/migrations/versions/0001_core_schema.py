"""Core schema: people, cases, devices, zones, telemetry, alerts, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

from db.timescale import TELEMETRY_TABLES, enable_timescaledb, make_time_series

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE users (
    id uuid PRIMARY KEY,
    username text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('officer', 'supervisor', 'admin')),
    full_name text NOT NULL DEFAULT '',
    supervisor_id uuid REFERENCES users(id),
    is_active boolean NOT NULL DEFAULT true,
    failed_logins integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_supervisor_idx ON users (supervisor_id);

CREATE TABLE subjects (
    id uuid PRIMARY KEY,
    iin char(12) NOT NULL UNIQUE,
    full_name text NOT NULL,
    birth_date date NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE biometric_templates (
    subject_id uuid PRIMARY KEY REFERENCES subjects(id) ON DELETE CASCADE,
    method text NOT NULL,
    dim integer NOT NULL,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cases (
    id uuid PRIMARY KEY,
    subject_id uuid NOT NULL REFERENCES subjects(id),
    officer_id uuid NOT NULL REFERENCES users(id),
    court_order_ref text NOT NULL,
    starts_on date NOT NULL,
    ends_on date NOT NULL,
    risk_level text NOT NULL CHECK (risk_level IN ('low', 'medium', 'high')),
    timezone text NOT NULL DEFAULT 'Asia/Almaty',
    checkin_policy jsonb,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    closed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cases_officer_idx ON cases (officer_id, status);
CREATE INDEX cases_subject_idx ON cases (subject_id);

CREATE TABLE devices (
    id uuid PRIMARY KEY,
    serial text NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN ('bracelet', 'beacon', 'phone')),
    model text NOT NULL DEFAULT '',
    firmware text NOT NULL DEFAULT '',
    battery smallint,
    online boolean NOT NULL DEFAULT false,
    last_seen timestamptz,
    last_fix_at timestamptz,
    last_good_fix_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE device_assignments (
    id uuid PRIMARY KEY,
    device_id uuid NOT NULL REFERENCES devices(id),
    case_id uuid NOT NULL REFERENCES cases(id),
    assigned_at timestamptz NOT NULL DEFAULT now(),
    unassigned_at timestamptz,
    assigned_by uuid REFERENCES users(id),
    unassigned_by uuid REFERENCES users(id)
);
CREATE UNIQUE INDEX device_assignments_one_active ON device_assignments (device_id)
    WHERE unassigned_at IS NULL;
CREATE INDEX device_assignments_case_idx ON device_assignments (case_id);

CREATE TABLE zones (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('inclusion', 'exclusion')),
    geometry jsonb,
    circle jsonb,
    buffer_m double precision NOT NULL DEFAULT 0,
    schedule jsonb,
    exceptions jsonb NOT NULL DEFAULT '[]',
    shared boolean NOT NULL DEFAULT false,
    version integer NOT NULL DEFAULT 1,
    created_by uuid REFERENCES users(id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CHECK ((geometry IS NULL) <> (circle IS NULL))
);

CREATE TABLE case_zones (
    case_id uuid NOT NULL REFERENCES cases(id) ON DELETE CASCADE,
    zone_id uuid NOT NULL REFERENCES zones(id) ON DELETE CASCADE,
    attached_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, zone_id)
);
CREATE INDEX case_zones_zone_idx ON case_zones (zone_id);

-- Bumped by every change that the running geofence engine must see.
CREATE TABLE config_versions (
    name text PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO config_versions (name) VALUES ('zones');

-- Telemetry. Dedup key (device_id, seq, ts): a hypertable's unique index must hold its
-- time column, and a re-sent item carries the same ts.
CREATE TABLE fixes (
    device_id uuid NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    lat double precision NOT NULL,
    lon double precision NOT NULL,
    acc real NOT NULL,
    src text NOT NULL DEFAULT 'gps',
    spd real,
    hdg real,
    bat smallint,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, seq, ts)
);
CREATE INDEX fixes_device_ts_idx ON fixes (device_id, ts DESC);

CREATE TABLE device_events (
    device_id uuid NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    type text NOT NULL,
    detail jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, seq, ts)
);
CREATE INDEX device_events_device_ts_idx ON device_events (device_id, ts DESC);

CREATE TABLE checkins (
    device_id uuid NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    case_id uuid,
    method text NOT NULL,
    similarity real,
    liveness real NOT NULL,
    passed boolean NOT NULL,
    request_id text,
    lat double precision,
    lon double precision,
    acc real,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (device_id, seq, ts)
);
CREATE INDEX checkins_device_ts_idx ON checkins (device_id, ts DESC);

CREATE TABLE dead_letters (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    reason text NOT NULL,
    detail text NOT NULL DEFAULT '',
    item_index integer,
    payload bytea NOT NULL
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at DESC);

CREATE TABLE commands (
    id uuid PRIMARY KEY,
    device_id uuid NOT NULL REFERENCES devices(id),
    type text NOT NULL,
    params jsonb NOT NULL DEFAULT '{}',
    requested_by uuid REFERENCES users(id),
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    acked_at timestamptz,
    result text,
    detail text
);
CREATE INDEX commands_device_idx ON commands (device_id, created_at DESC);

CREATE TABLE checkin_requests (
    id uuid PRIMARY KEY,
    case_id uuid NOT NULL REFERENCES cases(id),
    device_id uuid REFERENCES devices(id),
    source text NOT NULL CHECK (source IN ('random', 'officer')),
    requested_by uuid REFERENCES users(id),
    due_at timestamptz NOT NULL,
    deadline timestamptz NOT NULL,
    command_id uuid,
    status text NOT NULL DEFAULT 'scheduled'
        CHECK (status IN ('scheduled', 'sent', 'passed', 'missed')),
    resolved_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkin_requests_due_idx ON checkin_requests (status, due_at);
CREATE INDEX checkin_requests_case_idx ON checkin_requests (case_id, created_at DESC);

-- Geofence episode state per device (all its (case, zone, kind) episodes), versioned so
-- that two ingest workers that ever see the same device cannot both advance it.
CREATE TABLE geofence_states (
    device_id uuid PRIMARY KEY REFERENCES devices(id),
    last_ts timestamptz,
    state jsonb NOT NULL DEFAULT '{}',
    version bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Snapshots of that state at batch boundaries, to re-evaluate from a late fix.
CREATE TABLE geofence_snapshots (
    device_id uuid NOT NULL REFERENCES devices(id),
    ts timestamptz NOT NULL,
    state jsonb NOT NULL,
    PRIMARY KEY (device_id, ts)
);

CREATE TABLE alerts (
    id uuid PRIMARY KEY,
    case_id uuid NOT NULL REFERENCES cases(id),
    device_id uuid REFERENCES devices(id),
    zone_id uuid REFERENCES zones(id),
    type text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    episode_key text NOT NULL,
    episode_open boolean NOT NULL DEFAULT true,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    evidence jsonb NOT NULL DEFAULT '{}',
    late boolean NOT NULL DEFAULT false,
    delay_s double precision,
    inferred boolean NOT NULL DEFAULT false,
    escalation_level integer NOT NULL DEFAULT 0,
    escalated_at timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by uuid REFERENCES users(id),
    resolved_at timestamptz,
    resolved_by uuid REFERENCES users(id),
    resolution text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    change_seq bigserial NOT NULL
);
-- One alert per episode: the key names the episode (case, type, zone/device, start).
CREATE UNIQUE INDEX alerts_episode_key ON alerts (case_id, type, episode_key);
-- At most one open episode per (case, type, zone, device).
CREATE UNIQUE INDEX alerts_one_open_episode ON alerts
    (case_id, type, coalesce(zone_id, '00000000-0000-0000-0000-000000000000'::uuid),
     coalesce(device_id, '00000000-0000-0000-0000-000000000000'::uuid))
    WHERE episode_open;
CREATE INDEX alerts_case_idx ON alerts (case_id, created_at DESC);
CREATE INDEX alerts_status_idx ON alerts (status, severity, created_at DESC);
CREATE INDEX alerts_change_seq_idx ON alerts (change_seq);
-- Every insert or change of an alert takes a new change_seq: the SSE stream's cursor.
CREATE FUNCTION alerts_bump_change_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_seq := nextval(pg_get_serial_sequence('alerts', 'change_seq'));
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER alerts_change_seq BEFORE INSERT OR UPDATE ON alerts
    FOR EACH ROW EXECUTE FUNCTION alerts_bump_change_seq();

CREATE TABLE alert_events (
    id bigserial PRIMARY KEY,
    alert_id uuid NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    actor_id uuid REFERENCES users(id),
    kind text NOT NULL,
    data jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX alert_events_alert_idx ON alert_events (alert_id, id);

CREATE TABLE notification_deliveries (
    id bigserial PRIMARY KEY,
    alert_id uuid NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    notifier text NOT NULL,
    target text NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    user_id uuid,
    action text NOT NULL,
    resource text NOT NULL,
    resource_id text,
    case_id uuid,
    detail jsonb NOT NULL DEFAULT '{}',
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX audit_log_case_idx ON audit_log (case_id, id);
CREATE INDEX audit_log_user_idx ON audit_log (user_id, id);
-- Append-only: the application role may insert, never update or delete.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE idempotency_keys (
    key text NOT NULL,
    user_id uuid NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    status integer NOT NULL,
    body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
"""


def upgrade() -> None:
    conn = op.get_bind()
    enable_timescaledb(conn)
    op.execute(SCHEMA)
    for table in TELEMETRY_TABLES:
        make_time_series(conn, table)


def downgrade() -> None:
    raise NotImplementedError("the core schema is not downgraded; restore a backup instead")
