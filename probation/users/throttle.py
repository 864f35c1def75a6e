"""Sign-in throttling: exponential backoff per (username, address), per address and per
username, instead of a lock-out that anyone could trigger for everyone.

Plain logic on plain data (the clock is passed in). Each key counts failures; after
`free` of them every further failure makes the key wait 2**(n - free) seconds (capped).
A throttled attempt is refused before any password is hashed, so a flood costs almost
nothing. The per-username key (a distributed guess at one account) does not stop an
address that signed in as that user before: an attacker elsewhere cannot lock the user
out of their usual place.

State is per process (one API process per host in the shipped deployments); with several
API processes each throttles on its own, which multiplies the allowance by their number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: How much more a per-address and a per-username key allow than a (username, address) pair.
IP_FACTOR = 4
USER_FACTOR = 10
MAX_KEYS = 200_000


@dataclass
class _Key:
    failures: int = 0
    until: float = 0.0
    last: float = 0.0


@dataclass
class LoginThrottle:
    free: int = 5
    max_wait_s: float = 900.0
    _keys: dict[tuple[str, ...], _Key] = field(default_factory=dict)
    _known: dict[tuple[str, str], float] = field(default_factory=dict)

    def _limits(self, username: str, address: str) -> list[tuple[tuple[str, ...], int]]:
        u = username.lower()
        keys = [(("pair", u, address), self.free), (("ip", address), self.free * IP_FACTOR)]
        if (u, address) not in self._known:
            keys.append((("user", u), self.free * USER_FACTOR))
        return keys

    def wait(self, username: str, address: str, now: float) -> float:
        """Seconds this attempt must wait (0: go ahead)."""
        waits = [self._keys[k].until - now for k, _ in self._limits(username, address)
                 if k in self._keys]
        longest = max(waits, default=0.0)
        return math.ceil(longest) if longest > 0 else 0.0

    def failed(self, username: str, address: str, now: float) -> None:
        self._prune(now)
        for k, free in self._limits(username, address):
            key = self._keys.setdefault(k, _Key())
            key.failures += 1
            key.last = now
            over = key.failures - free
            if over >= 0:
                key.until = now + min(2.0 ** over, self.max_wait_s)

    def succeeded(self, username: str, address: str, now: float) -> None:
        u = username.lower()
        self._keys.pop(("pair", u, address), None)
        self._known[(u, address)] = now

    def _prune(self, now: float) -> None:
        if len(self._keys) < MAX_KEYS and len(self._known) < MAX_KEYS:
            return
        idle = 2 * self.max_wait_s
        self._keys = {k: v for k, v in self._keys.items() if now - v.last < idle}
        if len(self._known) >= MAX_KEYS:
            newest = sorted(self._known.items(), key=lambda kv: kv[1])[-MAX_KEYS // 2:]
            self._known = dict(newest)
