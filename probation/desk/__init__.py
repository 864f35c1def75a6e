"""The alert desk: alert lifecycle, device inventory and assignments, telemetry views."""
