"""Tracks: a case's fixes over a period, thinned, as GeoJSON."""
