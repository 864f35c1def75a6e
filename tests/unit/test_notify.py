"""Notifiers: webhook signing, retries with backoff, permanent failures; routing."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from alerts.models import Severity
from alerts.notify import (
    LogNotifier,
    Route,
    WebhookNotifier,
    build_notifiers,
    parse_routes,
    sign,
    verify_signature,
)

PAYLOAD = {"event": "opened", "level": 0,
           "alert": {"id": "a1", "type": "strap_tamper", "severity": "critical"}}


def _mock(responses: list[int | Exception], seen: list[httpx.Request]) -> httpx.Client:
    it = iter(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        r = next(it)
        if isinstance(r, Exception):
            raise r
        return httpx.Response(r)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_signature_round_trip_and_tamper() -> None:
    body = b'{"x":1}'
    ts = int(time.time())
    sig = sign("s3cret", ts, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature("s3cret", ts, body, sig)
    assert not verify_signature("s3cret", ts, body + b" ", sig)
    assert not verify_signature("other", ts, body, sig)
    assert not verify_signature("s3cret", ts - 3600, body, sign("s3cret", ts - 3600, body))


def test_webhook_signed_post() -> None:
    seen: list[httpx.Request] = []
    n = WebhookNotifier(url="https://hooks.example/alerts", secret="k", client=_mock([204], seen))
    out = n.send(PAYLOAD)
    assert out.ok and out.attempts == 1 and out.status_code == 204
    (req,) = seen
    assert req.method == "POST" and req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == PAYLOAD
    assert req.headers["x-probation-event"] == "opened"
    assert verify_signature("k", req.headers["x-probation-timestamp"], req.content,
                            req.headers["x-probation-signature"])


def test_webhook_retries_with_backoff() -> None:
    seen: list[httpx.Request] = []
    sleeps: list[float] = []
    n = WebhookNotifier(
        url="https://hooks.example/a", secret="k", max_attempts=4, backoff_s=0.5,
        client=_mock([503, httpx.ConnectError("refused"), 429, 200], seen), sleep=sleeps.append,
    )
    out = n.send(PAYLOAD)
    assert out.ok and out.attempts == 4 and len(seen) == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_webhook_gives_up_and_4xx_is_permanent() -> None:
    seen: list[httpx.Request] = []
    n = WebhookNotifier(url="https://h.example/a", secret="k", max_attempts=3,
                        client=_mock([500, 502, 500], seen), sleep=lambda s: None)
    out = n.send(PAYLOAD)
    assert not out.ok and out.attempts == 3 and out.error == "HTTP 500" and not out.permanent
    seen.clear()
    n = WebhookNotifier(url="https://h.example/a", secret="k", max_attempts=3,
                        client=_mock([410], seen), sleep=lambda s: None)
    out = n.send(PAYLOAD)
    assert not out.ok and out.attempts == 1 and out.permanent and len(seen) == 1


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/hook", got
    finally:
        srv.shutdown()


def test_webhook_against_a_real_http_server(http_server: Any) -> None:
    url, got = http_server
    out = WebhookNotifier(url=url, secret="topsecret").send(PAYLOAD)
    assert out.ok
    (headers, body), = got
    assert verify_signature("topsecret", headers["x-probation-timestamp"], body,
                            headers["x-probation-signature"])


def test_routes() -> None:
    routes = parse_routes([
        {"notifier": "log"},
        {"notifier": "webhook", "min_severity": "high", "events": ["opened", "escalated"]},
        {"notifier": "sms", "types": ["strap_tamper"]},
    ])
    assert routes[0] == Route("log")
    assert routes[1].matches(type="checkin_missed", severity="critical", event="escalated")
    assert not routes[1].matches(type="checkin_missed", severity="medium", event="opened")
    assert routes[1].min_severity is Severity.HIGH
    assert routes[2].matches(type="strap_tamper", severity="low", event="opened")
    assert not routes[2].matches(type="battery_low", severity="low", event="opened")
    bad: list[dict[str, Any]]
    for bad in ([{"types": []}], [{"notifier": "x", "colour": "red"}],
                [{"notifier": "x", "events": ["closed"]}], [{"notifier": "x", "min_severity": "huge"}]):
        with pytest.raises(ValueError):
            parse_routes(bad)


def test_build_notifiers() -> None:
    assert set(build_notifiers(webhook_url=None, webhook_secret=None)) == {"log"}
    n = build_notifiers(webhook_url="https://h.example", webhook_secret="k")
    assert set(n) == {"log", "webhook"} and n["webhook"].target == "https://h.example"
    with pytest.raises(ValueError):
        build_notifiers(webhook_url="https://h.example", webhook_secret=None)
    assert LogNotifier().send(PAYLOAD).ok
