"""One `Settings` object for the whole service, read from `PROBATION_*` environment variables."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    mqtt_client_id: str = Field(
        default="probation-ingest",
        description="Client id of the ingest worker's persistent session.",
    )
    mqtt_share_group: str | None = Field(
        default=None,
        description="MQTT 5 shared-subscription group: several ingest workers share the load.",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the embedded database, broker state and generated secrets live.",
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

    def resolved_jwt_secret(self) -> str:
        """The token-signing secret: the configured one, else the one kept in the data dir."""
        return self._persistent_secret("jwt_secret", self.jwt_secret, secrets.token_urlsafe(48))

    def resolved_biometric_key(self) -> str:
        """The template-encryption key: the configured one, else the one kept in the data dir."""
        import base64

        return self._persistent_secret(
            "biometric_key",
            self.biometric_key,
            base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own `Settings` instead)."""
    return Settings()
