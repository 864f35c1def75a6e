"""Sign-in throttling as plain logic: backoff doubles, keys are separate, no lock-out of
a user's known address by a flood elsewhere."""

from __future__ import annotations

from probation.users.throttle import USER_FACTOR, LoginThrottle


def test_backoff_doubles_after_the_free_attempts_and_is_capped() -> None:
    t = LoginThrottle(free=3, max_wait_s=60)
    waits = []
    for i in range(10):
        t.failed("alice", "1.1.1.1", now=float(i))
        waits.append(t.wait("alice", "1.1.1.1", now=float(i)))
    assert waits[:2] == [0, 0]
    assert waits[2:7] == [1, 2, 4, 8, 16]
    assert max(waits) == 60


def test_a_flood_from_one_address_does_not_touch_other_addresses_or_users() -> None:
    t = LoginThrottle(free=5, max_wait_s=900)
    t.succeeded("alice", "10.0.0.1", now=0)
    for i in range(200):
        t.failed("alice", "6.6.6.6", now=1 + i / 100)
    assert t.wait("alice", "6.6.6.6", now=3) > 0
    assert t.wait("bob", "6.6.6.6", now=3) > 0  # the address itself is slowed
    assert t.wait("alice", "10.0.0.1", now=3) == 0  # alice at home
    assert t.wait("bob", "10.0.0.2", now=3) == 0


def test_a_distributed_guess_slows_the_username_but_not_its_known_address() -> None:
    t = LoginThrottle(free=2, max_wait_s=900)
    t.succeeded("alice", "10.0.0.1", now=0)
    for i in range(2 * USER_FACTOR + 1):
        t.failed("alice", f"7.7.{i}.1", now=1)
    assert t.wait("alice", "8.8.8.8", now=1.5) > 0
    assert t.wait("alice", "10.0.0.1", now=1.5) == 0


def test_success_clears_the_pair() -> None:
    t = LoginThrottle(free=1, max_wait_s=900)
    t.failed("alice", "1.1.1.1", now=0)
    t.failed("alice", "1.1.1.1", now=0)
    assert t.wait("alice", "1.1.1.1", now=0.5) > 0
    t.succeeded("alice", "1.1.1.1", now=5)
    assert t.wait("alice", "1.1.1.1", now=5) == 0
