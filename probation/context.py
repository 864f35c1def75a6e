"""What every request may need: settings and the resolved server URLs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from probation.settings import Settings


@dataclass
class AppContext:
    """The settings and the database and broker URLs one app serves."""

    settings: Settings
    database_url: str
    mqtt_url: str
    broker_accounts: Any = None  # `.sync()`: the broker learns the devices' credentials
