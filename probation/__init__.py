"""Probation electronic monitoring: the app shell (settings, API, auth, audit, CLI)."""

__version__ = "0.1.0"
