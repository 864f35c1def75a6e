"""Composition of the long-running parts: the ingest worker with every pipeline stage.

`serve`, `probation ingest`, the demo and the tests build the worker here, so the
geofence engine, the biometric check-in decision and rapid-mode commands are wired the
same way everywhere.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from devices.checkin_verifier import CheckinVerifier
from devices.checkins import BiometricCheckins, CheckinOutcomes, CheckinThresholds
from devices.downlink import CommandPublisher
from devices.event_alerts import EventAlerts
from devices.faces.analysis import Thresholds
from devices.geofencing import GeofenceEvaluator
from devices.ingest import CommitInfo, IngestWorker
from devices.pipeline import AfterStoreStage
from devices.scheduled import SilenceGaps
from probation.runtime.scheduler import RuleConfig
from probation.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Ingestion:
    """The ingest worker plus the publisher that sends rapid-mode commands after commit."""

    worker: IngestWorker
    evaluator: GeofenceEvaluator
    publisher: CommandPublisher
    verifier: CheckinVerifier | None = None
    _sender: threading.Thread | None = field(default=None, init=False)
    _wake: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)

    def start(self) -> None:
        if self.verifier is not None:
            self.verifier.start()
        self.publisher.start()
        self._sender = threading.Thread(target=self._send_loop, name="rapid-mode", daemon=True)
        self._sender.start()
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()
        self._stop.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(5)
        self.publisher.stop()
        if self.verifier is not None:
            self.verifier.stop()

    def wait(self) -> None:
        self.worker.wait()

    def on_commit(self, info: CommitInfo) -> None:
        if self.evaluator.pending_commands:
            self._wake.set()

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            for cid in self.evaluator.take_pending_commands():
                try:
                    self.publisher.publish_recorded(cid)
                except LookupError:
                    pass  # its batch was rolled back: the command was never recorded
                except Exception:
                    log.exception("rapid-mode command %s not sent (left for resend)", cid)


def face_thresholds(settings: Settings) -> Thresholds:
    return Thresholds(match=settings.face_match_min)


def build_verifier(settings: Settings, *, database_url: str) -> CheckinVerifier:
    """The check-in verifier: frames verified in its own process pool, off ingest."""
    return CheckinVerifier(
        database_url=database_url, key=settings.resolved_biometric_key(),
        thresholds=face_thresholds(settings), processes=settings.checkin_verifier_processes,
    )


def build_ingestion(
    settings: Settings, *, database_url: str, mqtt_url: str, verify: bool = True,
    **worker_kwargs: Any,
) -> Ingestion:
    """The ingest worker with the geofence, check-in and rapid-mode stages, and (unless
    `verify` is false) the check-in verifier."""
    thresholds = CheckinThresholds(
        similarity=settings.checkin_similarity_min, liveness=settings.checkin_liveness_min
    )
    evaluator = GeofenceEvaluator()
    publisher = CommandPublisher(
        database_url=database_url, mqtt_url=mqtt_url, prefix=settings.mqtt_prefix,
        protocol=settings.mqtt_protocol,
    )
    # What runs after the COPY, in this order, each in its own savepoint of the batch's
    # transaction (`devices.pipeline.run_after_store_stage`). Every alert that ingest
    # opens is opened by one of these, through `alerts.service.open_episode`.
    after_store: list[AfterStoreStage] = [
        evaluator,  # zone episodes → zone alerts; rapid-mode commands
        EventAlerts(),  # tamper / battery / power / jamming / beacon events → alerts
        # requests passed; `checkin_failed` alerts; frames queued for the verifier
        CheckinOutcomes(thresholds=thresholds, key=settings.resolved_biometric_key()),
        SilenceGaps(RuleConfig.from_settings(settings).silence),  # short `communication_lost`
    ]
    holder: list[Ingestion] = []
    worker = IngestWorker(
        database_url=database_url, mqtt_url=mqtt_url, prefix=settings.mqtt_prefix,
        client_id=settings.mqtt_client_id, share_group=settings.mqtt_share_group,
        protocol=settings.mqtt_protocol,
        after_store=after_store,
        checkin_judge=BiometricCheckins(
            key=settings.resolved_biometric_key(), thresholds=thresholds
        ),
        on_commit=lambda info: holder[0].on_commit(info),
        **worker_kwargs,
    )
    ing = Ingestion(worker=worker, evaluator=evaluator, publisher=publisher,
                    verifier=build_verifier(settings, database_url=database_url)
                    if verify else None)
    holder.append(ing)
    return ing
