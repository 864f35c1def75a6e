"""Fix ingestion while check-ins are verified: `probation bench biometrics --ingest`.

The real ingest worker and check-in verifier (`probation.runtime.workers.build_ingestion`,
one verifier process) on a private PostgreSQL and mosquitto. Fixes are published at a
steady rate in two phases of equal length: without check-ins (the reference, same run)
and with 50 check-ins of 3 real face frames published at the phase's start. Per phase:
fixes stored per second and the lag from publishing a fix message to its rows being
committed after the last was published (drain). Also: how long the 50 verifications
took. The 50 check-ins carry the same three frames (the person's photos), so after the
first they fail as replays; each is still verified in full (faces, embeddings, challenge,
hashes), which is the load this measures.
"""

from __future__ import annotations

import base64
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.biometrics import REPO_FACES
from bench.harness import private_postgres, release_servers

FIXES_PER_MESSAGE = 20


def _setup(url: str, devices: int) -> tuple[list[str], uuid.UUID, str]:
    """Devices with fixes only, and one enrolled case with a phone for the check-ins."""
    officer, subject, case, phone = (uuid.uuid4() for _ in range(4))
    serials = [f"BENCHFX-{i:05d}" for i in range(devices)]
    with psycopg.connect(url) as c:
        c.execute("INSERT INTO users (id, username, password_hash, role) VALUES (%s, 'bo', 'x',"
                  " 'officer')", (officer,))
        c.execute("INSERT INTO subjects (id, iin, full_name, birth_date) VALUES (%s,"
                  " '900101300123', 'S', '1990-01-01')", (subject,))
        c.execute("INSERT INTO cases (id, subject_id, officer_id, court_order_ref, starts_on,"
                  " ends_on, risk_level) VALUES (%s, %s, %s, 'B-1', '2026-01-01', '2027-12-31',"
                  " 'high')", (case, subject, officer))
        c.execute("INSERT INTO devices (id, serial, kind) VALUES (%s, 'BENCH-PHONE', 'phone')",
                  (phone,))
        c.execute("INSERT INTO device_assignments (id, device_id, case_id) VALUES (%s, %s, %s)",
                  (uuid.uuid4(), phone, case))
        with c.cursor() as cur:
            cur.executemany("INSERT INTO devices (id, serial, kind) VALUES (%s, %s, 'bracelet')",
                            [(uuid.uuid4(), s) for s in serials])
    return serials, subject, "BENCH-PHONE"


def _enrol(url: str, key: str, subject: uuid.UUID) -> None:
    from devices.biometrics import encrypt_template
    from devices.faces.analysis import template_of
    from devices.faces.verify import assess_photo

    embs = [assess_photo((REPO_FACES / f"{n}.jpg").read_bytes()).embedding
            for n in ("obama_portrait", "obama_briefing")]
    t = template_of(embs)  # type: ignore[arg-type]
    with psycopg.connect(url) as c:
        c.execute("INSERT INTO biometric_templates (subject_id, method, dim, ciphertext)"
                  " VALUES (%s, 'face', 128, %s)",
                  (subject, encrypt_template(key, t, subject_id=subject)))


def run_ingest_phases(*, rate: float = 2000.0, seconds: float = 20.0, checkins: int = 50,
                      devices: int = 200, out: Any = print) -> dict[str, Any]:
    from db.migrate import upgrade
    from devices.broker import Mosquitto
    from devices.faces.images import decode, encode_jpeg
    from devices.mqtt import broker_address, mqtt_client
    from probation.runtime.workers import build_ingestion
    from probation.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="probation-bench-bio-"))
    pg = broker = None
    try:
        pg = private_postgres(work, database="bench", settings={"shared_buffers": "256MB"})
        url = pg.url("bench")
        upgrade(url)
        broker = Mosquitto(data_dir=work / "mosquitto")
        broker.start()
        prefix = f"bench{uuid.uuid4().hex[:6]}/v1"
        key = base64.urlsafe_b64encode(b"k" * 32).decode()
        settings = Settings(database_url=url, mqtt_url=broker.url, mqtt_prefix=prefix,
                            data_dir=work / "data", jwt_secret="bench-" + "x" * 40,
                            biometric_key=key, mqtt_client_id=f"ingest-{uuid.uuid4().hex[:6]}")
        serials, subject, phone = _setup(url, devices)
        _enrol(url, key, subject)
        ing = build_ingestion(settings, database_url=url, mqtt_url=broker.url, flush_ms=20)
        assert ing.verifier is not None
        ing.verifier.poll_s = 0.05
        ing.start()
        # warm the verifier's process (model load) before measuring
        ing.verifier.pool.submit(int).result(timeout=120)
        client = mqtt_client(broker.url, f"bench-pub-{uuid.uuid4().hex[:6]}")
        client.connect(*broker_address(broker.url))
        client.loop_start()
        frames = [base64.b64encode(encode_jpeg(decode((REPO_FACES / f"{n}.jpg").read_bytes())[0]))
                  .decode() for n in ("obama_portrait", "obama_briefing", "obama_portrait")]
        seq = [0]

        def phase(name: str, with_checkins: bool) -> dict[str, Any]:
            sent = 0
            base = datetime.now(UTC) - timedelta(minutes=1)
            with psycopg.connect(url, autocommit=True) as c:
                stored0 = c.execute("SELECT count(*) FROM fixes").fetchone()[0]  # type: ignore[index]
                verified0 = c.execute("SELECT count(*) FROM checkins WHERE verdict IS NOT NULL").fetchone()[0]  # type: ignore[index]
            t_ci = time.monotonic()
            if with_checkins:
                for i in range(checkins):
                    item = {"seq": 10_000 + i, "ts": (base + timedelta(seconds=i)).isoformat(),
                            "method": "face", "challenge": "turn_left", "frames": frames}
                    client.publish(f"{prefix}/devices/{phone}/checkins",
                                   orjson.dumps({"checkins": [item]}), qos=1)
            interval = FIXES_PER_MESSAGE / rate
            t0 = time.monotonic()
            k = 0
            while time.monotonic() - t0 < seconds:
                s = serials[k % len(serials)]
                seq[0] += 1
                q = seq[0] * FIXES_PER_MESSAGE
                ts = base + timedelta(milliseconds=seq[0])
                fixes = [{"seq": q + j, "ts": (ts + timedelta(microseconds=j)).isoformat(),
                          "lat": 43.2 + j * 1e-5, "lon": 76.9, "acc": 8} for j in range(FIXES_PER_MESSAGE)]
                client.publish(f"{prefix}/devices/{s}/fixes", orjson.dumps({"fixes": fixes}), qos=1)
                sent += FIXES_PER_MESSAGE
                k += 1
                nxt = t0 + k * interval
                time.sleep(max(0.0, nxt - time.monotonic()))
            t_pub_end = time.monotonic()
            with psycopg.connect(url, autocommit=True) as c:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    n = c.execute("SELECT count(*) FROM fixes").fetchone()[0] - stored0  # type: ignore[index]
                    if n >= sent:
                        break
                    time.sleep(0.05)
                t_end = time.monotonic()
                verified = 0
                if with_checkins:
                    deadline = time.monotonic() + 600
                    while time.monotonic() < deadline:
                        verified = c.execute("SELECT count(*) FROM checkins WHERE verdict IS NOT NULL").fetchone()[0] - verified0  # type: ignore[index]
                        if verified >= checkins:
                            break
                        time.sleep(0.1)
                t_ver = time.monotonic() - t_ci
                passed = c.execute("SELECT count(*) FROM checkins WHERE passed").fetchone()[0]  # type: ignore[index]
            res = {"fixes": sent, "stored": int(n), "publish_s": round(t_pub_end - t0, 2),
                   "fixes_per_s": round(n / (t_end - t0), 1),
                   "drain_after_publish_s": round(t_end - t_pub_end, 2)}
            if with_checkins:
                res |= {"checkins": checkins, "verified": int(verified), "passed": int(passed),
                        "all_verified_after_s": round(t_ver, 1),
                        "per_checkin_s": round(t_ver / max(verified, 1), 3)}
            out(f"  {name}: {res}")
            return res

        out(f"fix ingestion at {rate:.0f} fixes/s for {seconds:.0f} s per phase")
        ref = phase("fixes only", False)
        loaded = phase(f"fixes + {checkins} check-ins", True)
        client.loop_stop()
        client.disconnect()
        ing.stop()
        return {"reference": ref, "with_checkins": loaded,
                "rate_ratio": round(loaded["fixes_per_s"] / ref["fixes_per_s"], 3)}
    finally:
        release_servers(broker, pg, work)


