"""Micro-benchmark of `devices.protocol.decode` on realistic fix messages (no I/O).

Run: `uv run python -m bench.protocol`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson

from devices.protocol import decode

_BASE = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def make_fix_payloads(
    n_messages: int, fixes_per_message: int, *, epoch_ms: bool = False
) -> list[bytes]:
    """Fix messages like a bracelet's: RFC 3339 'Z' timestamps (or epoch ms), all fields set."""
    payloads = []
    seq = 0
    for _ in range(n_messages):
        fixes = []
        for j in range(fixes_per_message):
            t = _BASE + timedelta(milliseconds=250 * seq)
            ts: str | int = (
                int(t.timestamp() * 1000)
                if epoch_ms
                else t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
            )
            fixes.append(
                {
                    "seq": seq,
                    "ts": ts,
                    "lat": 43.238949 + j * 1e-5,
                    "lon": 76.889709 - j * 1e-5,
                    "acc": 8.5,
                    "src": "gps",
                    "spd": 1.2,
                    "hdg": 270,
                    "bat": 87,
                }
            )
            seq += 1
        payloads.append(orjson.dumps({"fixes": fixes}))
    return payloads


def bench_decode(
    n_messages: int = 2000, fixes_per_message: int = 50, *, epoch_ms: bool = False, repeat: int = 3
) -> float:
    """Decode `n_messages` fix messages; return the best-of-`repeat` throughput in fixes/s."""
    payloads = make_fix_payloads(n_messages, fixes_per_message, epoch_ms=epoch_ms)
    topic = "pm/v1/devices/BR-000123/fixes"
    now = _BASE + timedelta(days=365)
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        for p in payloads:
            d = decode(topic, p, now=now)
        best = min(best, time.perf_counter() - t0)
        if len(d.items) != fixes_per_message or d.rejected:
            raise AssertionError(f"benchmark payload rejected: {d.rejected[:1]}")
    return n_messages * fixes_per_message / best


if __name__ == "__main__":
    for n, k in ((2000, 50), (20000, 1), (400, 500)):
        for epoch in (False, True):
            rate = bench_decode(n, k, epoch_ms=epoch)
            kind = "epoch ms" if epoch else "RFC 3339"
            print(
                f"{n:>6} msgs x {k:>3} fixes ({kind}): {rate:>10,.0f} fixes/s  {1e6 / rate:.2f} us/fix"
            )
