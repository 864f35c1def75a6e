"""One `Settings` object for the whole service, read from `PROBATION_*` environment variables."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from geofence.area import ServiceArea


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "probation"


class Settings(BaseSettings):
    """Service configuration. Empty URLs mean: start the embedded default."""

    model_config = SettingsConfigDict(env_prefix="PROBATION_", env_file=None, extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/TimescaleDB URL (postgresql://user:pass@host:5432/db). "
        "Empty: `serve` starts an embedded PostgreSQL in the data dir.",
    )
    mqtt_url: str | None = Field(
        default=None,
        description="MQTT broker URL (mqtt://user:pass@host:1883). Empty: `serve` starts an "
        "embedded broker on 127.0.0.1.",
    )
    mqtt_prefix: str = Field(default="pm/v1", description="Topic prefix of the gateway protocol.")
    mqtt_host: str = Field(
        default="127.0.0.1",
        description="Embedded broker: the address devices connect to (plain MQTT here, or "
        "MQTT over TLS when a certificate is given; the plain listener then stays on "
        "127.0.0.1).",
    )
    mqtt_port: int = Field(
        default=1883,
        description="Embedded broker: plain MQTT port on first start (another free port if "
        "taken); the port chosen is kept in the data dir and reused on every restart.",
    )
    mqtt_tls_port: int = Field(default=8883, description="Embedded broker: MQTT over TLS port.")
    tls_cert: Path | None = Field(
        default=None,
        description="`serve`: server certificate chain (PEM) for HTTPS and MQTT over TLS.",
    )
    tls_key: Path | None = Field(default=None, description="`serve`: its private key (PEM).")
    mqtt_simulator_account: bool = Field(
        default=False,
        description="Embedded broker: also create the `probation.simulator` account, which "
        "publishes for every device (for `probation simulate`; `demo` always has it).",
    )
    mqtt_password_file: Path | None = Field(
        default=None,
        description="External mosquitto: the password file the API keeps in sync with the "
        "device credentials (the broker reloads it; see deploy/mosquitto).",
    )
    mqtt_client_id: str = Field(
        default="probation-ingest",
        description="Client id of the ingest worker's persistent session.",
    )
    mqtt_share_group: str | None = Field(
        default=None,
        description="MQTT 5 shared-subscription group: several ingest workers share the load.",
    )
    mqtt_protocol: str = Field(
        default="3.1.1",
        description="MQTT protocol version of the ingest worker: 3.1.1 or 5 (5 for shared "
        "subscriptions on brokers other than Mosquitto and EMQX).",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the embedded database, broker state and generated secrets live.",
    )
    service_area: tuple[float, float, float, float] = Field(
        default=(40.5, 46.4, 55.5, 87.4),
        description="Where zones may lie: [lat_min, lon_min, lat_max, lon_max] in degrees "
        "(JSON list; default Kazakhstan's bounding box). A zone outside is refused (422, "
        "with a hint when latitude and longitude look swapped); fixes outside are stored.",
    )
    admin_password: str | None = Field(
        default=None, description="If set and no user exists, an `admin` user is created on start."
    )
    jwt_secret: str | None = Field(
        default=None,
        description="Secret that signs access tokens. Generated once and kept in the data dir "
        "when not given.",
    )
    jwt_ttl_s: int = Field(default=900, description="Access token lifetime in seconds.")
    biometric_key: str | None = Field(
        default=None,
        description="Key (urlsafe base64, 32 bytes) that encrypts biometric templates at rest. "
        "Generated once and kept in the data dir when not given.",
    )
    timezone: str = Field(default="Asia/Almaty", description="Default timezone of new cases.")
    log_level: str = Field(default="INFO", description="Logging level.")

    # --- scheduler (timed rules, check-ins, escalation, notifications, retention) ---
    scheduler_interval_s: float = Field(
        default=30, description="Period of the silence, curfew-start, check-in and escalation "
        "jobs (seconds).",
    )
    scheduler_lock_retry_s: float = Field(
        default=3, description="How often a standby scheduler retries the leader lock (seconds).",
    )
    ingest_watermark_max_age_s: float = Field(
        default=60, description="The clock rules use the ingest watermark of the workers that "
        "reported within this many seconds; none: the rules wait and the scheduler logs "
        "INGEST STALLED.",
    )
    upload_interval_s: dict[str, float] = Field(
        default={"high": 60, "medium": 120, "low": 300},
        description="Default device upload interval per risk level (seconds, JSON); "
        "communication_lost after max(3 x this, 10 min) of silence.",
    )
    proximity_rate_limit: int = Field(
        default=30, ge=1, description="Proximity searches a user may make per "
        "`proximity_rate_window_s` (counted from the audit log, across processes).")
    proximity_rate_window_s: float = Field(
        default=600.0, gt=0, description="The window of the proximity search rate limit.")
    communication_lost_min_s: float = Field(
        default=600, description="Minimum silence before communication_lost (seconds).",
    )
    location_lost_s: float = Field(
        default=1800, description="No fix with acc <= 100 m for this long -> location_lost "
        "(seconds).",
    )
    curfew_no_fix_s: float = Field(
        default=900, description="At an inclusion window's start, a fix older than this counts "
        "as no fix (seconds).",
    )
    escalation_deadlines_s: dict[str, float | None] = Field(
        default={"critical": 300, "high": 900, "medium": 3600, "low": None},
        description="Unacknowledged alerts escalate after this per severity (seconds, JSON; "
        "null: never).",
    )
    escalation_max_level: int = Field(default=2, description="Highest escalation level.")
    checkin_similarity_min: float = Field(
        default=0.6, description="Cosine similarity to the template a check-in needs to pass.",
    )
    checkin_liveness_min: float = Field(
        default=0.8, description="Liveness score a check-in needs to pass.",
    )
    face_match_min: float = Field(
        default=0.955, description="Cosine similarity of every check-in frame's face to the "
        "enrolled template (the backend's model) a check-in needs: FAR 0.05 %, FRR 5 % in "
        "`probation bench biometrics` (README 'Biometrics').",
    )
    checkin_challenges: list[str] = Field(
        default=["turn_left", "turn_right", "blink", "smile"],
        description="Gestures a check-in request may ask for, one at random (JSON list).",
    )
    checkin_verifier_processes: int = Field(
        default=1, description="Processes that verify check-in frames (off the ingest path).",
    )
    biometric_keep_photos: bool = Field(
        default=False, description="Keep enrolment photos (encrypted); by default they are "
        "discarded once the templates are computed.",
    )
    checkin_per_day: dict[str, int] = Field(
        default={"high": 3, "medium": 1, "low": 0},
        description="Random check-ins per day per risk level when a case has no policy (JSON).",
    )
    checkin_from_hour: int = Field(default=8, description="Default local hour random check-ins start.")
    checkin_to_hour: int = Field(default=20, description="Default local hour random check-ins end.")
    checkin_deadline_s: int = Field(
        default=900, description="Time to answer a random check-in request (seconds, 60..3600).",
    )
    webhook_url: str | None = Field(
        default=None, description="Alert webhook: POST of the alert JSON, HMAC-SHA256 signed.",
    )
    webhook_secret: str | None = Field(
        default=None, description="Shared secret of the webhook signature (required with the URL).",
    )
    notify_routes: list[dict[str, Any]] = Field(
        default=[{"notifier": "log"}, {"notifier": "webhook"}],
        description="Which alerts go to which notifier (JSON list of {notifier, types?, "
        "min_severity?, events?}; notifiers: log, webhook).",
    )
    notify_interval_s: float = Field(default=10, description="Period of the notification job.")
    retention_years: int = Field(
        default=5, description="Raw telemetry is kept this many years after its case closes.",
    )
    dead_letter_retention_days: int = Field(
        default=90, description="Dead letters are kept this many days.",
    )

    map_tiles: str = Field(
        default="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        description="The console's map tiles: an XYZ URL template ({z}, {x}, {y}; {s} for "
        "subdomains). A self-hosted tile server on a closed network; empty: no tiles (zones, "
        "tracks and positions on a plain background with a scale).",
    )
    map_attribution: str = Field(
        default="© OpenStreetMap contributors",
        description="Attribution shown with the map tiles (the tile provider's terms).",
    )
    # --- session and audit security (issue 14) ---
    refresh_ttl_s: int = Field(
        default=12 * 3600,
        description="Refresh token lifetime in seconds (rotating: each use returns a new one).",
    )
    totp_required_roles: list[str] = Field(
        default=["admin"],
        description="Roles that must sign in with a TOTP second factor (JSON list); a user "
        "without one set up gets a token that can only reach `/api/v1/me` and "
        "`/api/v1/me/totp` until they enable it.",
    )
    login_free_attempts: int = Field(
        default=5, description="Failed sign-ins per username and client address before "
        "throttling starts (then the wait doubles with each failure).",
    )
    login_backoff_max_s: float = Field(
        default=900, description="Longest wait a throttled sign-in is told to keep (seconds).",
    )
    trusted_proxies: list[str] = Field(
        default=[],
        description="Addresses of reverse proxies whose X-Forwarded-For names the client "
        "(JSON list); empty: the TCP peer is the client.",
    )
    audit_key: str | None = Field(
        default=None,
        description="HMAC key of the audit chain (urlsafe base64, 32 bytes). Kept outside "
        "the database: generated once into the data dir (0600) when not given.",
    )
    audit_anchor_interval_s: float = Field(
        default=60, description="How often the audit chain head is anchored outside the "
        "database (the anchor file in the data dir, the log, and the webhook if set).",
    )
    audit_anchor_file: Path | None = Field(
        default=None, description="Where anchors are appended (default: "
        "<data_dir>/audit-anchors.jsonl).",
    )
    audit_anchor_webhook: bool = Field(
        default=False, description="Also POST each anchor to the alert webhook (signed).",
    )
    metrics_token: str | None = Field(
        default=None, description="Bearer token Prometheus sends to `/metrics` (an admin's "
        "access token works too); without either, `/metrics` answers 401.",
    )

    def secret_file(self, name: str) -> Path:
        return self.data_dir / "secrets" / name

    def _persistent_secret(self, name: str, given: str | None, make: str) -> str:
        if given:
            return given
        path = self.secret_file(name)
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make)
        return make

    def area(self) -> ServiceArea:
        """`service_area` as the geofence package's box."""
        return ServiceArea(*self.service_area)

    def resolved_jwt_secret(self) -> str:
        """The token-signing secret: the configured one, else the one kept in the data dir."""
        return self._persistent_secret("jwt_secret", self.jwt_secret, secrets.token_urlsafe(48))

    def resolved_audit_key(self) -> bytes:
        """The audit chain's HMAC key: the configured one, else the one kept in the data dir."""
        import base64

        raw = self._persistent_secret(
            "audit_key", self.audit_key, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        )
        return base64.urlsafe_b64decode(raw.encode())

    def resolved_totp_key(self) -> str:
        """The key (Fernet) that encrypts users' TOTP secrets, kept in the data dir."""
        from cryptography.fernet import Fernet

        return self._persistent_secret("totp_key", None, Fernet.generate_key().decode())

    def anchor_path(self) -> Path:
        return self.audit_anchor_file or self.data_dir / "audit-anchors.jsonl"

    def generated_secret(self, name: str, make: str) -> str:
        """A secret generated once (`make`) and kept in the data dir (mode 0600)."""
        return self._persistent_secret(name, None, make)

    def resolved_mqtt_backend_password(self) -> str:
        """The embedded broker's backend account password, kept in the data dir."""
        return self.generated_secret("mqtt_backend", secrets.token_urlsafe(32))

    def resolved_biometric_key(self) -> str:
        """The template-encryption key: the configured one, else the one kept in the data dir."""
        import base64

        return self._persistent_secret(
            "biometric_key",
            self.biometric_key,
            base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        )
