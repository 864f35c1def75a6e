"""Zones: inclusion and exclusion areas, their schedules and exceptions, and case links."""
