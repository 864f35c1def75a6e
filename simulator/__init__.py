"""Simulated people with bracelets and check-in phones, their truth, and scoring.

`probation simulate` (`run`), `probation demo` (`demo`), `probation score` (`score`);
`people` (routines and paths), `gps` (noise and accuracy), `violations` (planned
violations, the monitoring rules, truth records), `publisher` (MQTT, capped in-flight
QoS 1), `setup` (registration through the API).
"""
