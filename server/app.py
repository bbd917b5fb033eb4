"""Assemble and start the verification service from its configuration."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from hedui.audit.errors import AuditError
from hedui.audit.log import AuditLog, WitnessEndpoint, Witnessing
from hedui.audit.store import LogStore, open_log_engine
from hedui.core.clock import Clock
from hedui.core.custody import custodian_view
from hedui.core.keystore import KeyDir
from hedui.core.payment import load_public
from hedui.core.policy.book import PolicyBook
from hedui.core.rpc import Admission, RunningServer, create_server
from hedui.proto.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    monitoring_pb2,
    monitoring_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)
from hedui.server.alerts import AlertBook
from hedui.server.audit_service import AuditServicer
from hedui.server.config import ServiceConfig
from hedui.server.custodian_client import Custodian, RemoteCustodian
from hedui.server.disclosure import Disclosure
from hedui.server.errors import ConfigError, ServiceError
from hedui.server.fanout import ConnectorPool
from hedui.server.followup import FollowUpServicer, MonitoringServicer
from hedui.server.health_watch import DependencyWatch, Storage
from hedui.server.key_events import ed25519_fingerprint, record_startup
from hedui.server.monitor import Monitor, MonitorWorker
from hedui.server.quotas import Quotas
from hedui.server.registry_client import RegistryClient
from hedui.server.requests import RequestBook, StateSealer, StateUnavailable
from hedui.server.verification import VerificationServicer
from hedui.server.verifier import Verifier
from hedui.server.watchlist import WatchList

log = logging.getLogger("hedui.server")
MIN_PAILLIER_BITS = 2048
VERIFICATION_SERVICE = verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
MONITORING_SERVICE = monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"].full_name
FOLLOW_UP_SERVICE = monitoring_pb2.DESCRIPTOR.services_by_name["FollowUpService"].full_name


@dataclass
class RunningService:
    server: RunningServer
    verifier: Verifier
    watch: DependencyWatch | None = None
    retention: Retention | None = None
    settler: Settler | None = None
    monitor: MonitorWorker | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self, grace: float | None = 1.0) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.retention is not None:
            self.retention.stop()
        if self.settler is not None:
            self.settler.stop()
        if self.monitor is not None:
            self.monitor.stop()
        self.server.stop(grace)
        self.verifier.requests.close()
        self.verifier.pool.close()
        self.verifier.registry.close()
        if isinstance(self.verifier.custodian, RemoteCustodian):
            self.verifier.custodian.close()
        if self.verifier.audit.witnesses is not None:
            self.verifier.audit.witnesses.close()


class Settler:
    """Every ``seconds``: settle the claims of a replica that died, and this process's own that
    a fault left behind (a failed release, an outcome the log refused): each request answered
    from the log, given an "abandoned" outcome, or released, so its caller's retry goes on at
    once instead of waiting for the claim's lease."""

    def __init__(self, verifier: Verifier, seconds: float = 5.0) -> None:
        self._verifier, self._seconds = verifier, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="settler")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._seconds):
            if not self._verifier.requests.holds_its_lock():
                # PostgreSQL dropped this replica's owner lock: the others may settle its
                # claims as a dead replica's, so it stops (its supervisor starts a new life)
                log.error(
                    "this replica lost its claim lock on the state database (a database "
                    "restart?); stopping so that no two replicas decide one request"
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                answered, abandoned, _ = self._verifier.settle()
            except (ServiceError, AuditError) as e:  # a database still failing: next round
                log.error("settling claims left in progress failed: %s", e)
                continue
            except Exception:
                log.exception("settling claims left in progress failed")
                continue
            if answered or abandoned:
                log.warning(
                    "settled claims left in progress: %d answered from the log, %d abandoned",
                    answered,
                    abandoned,
                )

    def stop(self) -> None:
        self._stop.set()


class Retention:
    """Purge the figures of kept verdicts older than ``days``: at start, then hourly."""

    def __init__(self, book: RequestBook, days: int, now: Callable[[], float]) -> None:
        self._book, self._seconds, self._now = book, days * 86400, now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="retention")

    def purge(self) -> int:
        try:
            n = self._book.purge(self._now() - self._seconds)
        except StateUnavailable as e:
            log.error("retention: %s", e)
            return 0
        if n:
            log.info("retention: purged the figures of %d verdict(s)", n)
        return n

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self.purge()
        while not self._stop.wait(3600):
            self.purge()

    def stop(self) -> None:
        self._stop.set()


def audit_witnesses(config: ServiceConfig, keys: KeyDir) -> Witnessing | None:
    """The witnesses of ``config``'s ``[witness]`` that cosign the log's checkpoints, reached
    over mutual TLS with the service's certificate; None when it names none (then the key
    custodian, which decrypts only under cosigned checkpoints, refuses every decryption)."""
    if not config.witness_urls:
        return None
    return Witnessing(
        [
            WitnessEndpoint.parse(u, v)
            for u, v in zip(config.witness_urls, config.witness_vkeys, strict=True)
        ],
        keys.tls("service"),
        quorum=config.witness_quorum,
        timeout=config.witness_timeout_seconds,
    )


def build_verifier(
    config: ServiceConfig,
    *,
    now: Callable[[], dt.datetime] | None = None,
    policy: PolicyBook | None = None,
) -> Verifier:
    keys = KeyDir(config.keys_dir)
    tls = None if config.insecure else keys.tls("service")
    public = keys.paillier_public()
    verify_keys = {
        e.connector_id: keys.connector_verify_key(e.connector_id) for e in config.connectors
    }
    deployment_clock = Clock(config.timezone)
    clock = now or deployment_clock.now
    store = LogStore(open_log_engine(config.audit_database))
    if public.bits < MIN_PAILLIER_BITS:
        raise ConfigError(
            f"the Paillier key ({public.bits} bits) is too small; create "
            f"{MIN_PAILLIER_BITS}-bit keys"
        )
    view = custodian_view(
        [e.connector_id for e in config.connectors], verify_keys, public.max_plaintext_bits
    )
    if not config.custodian_address:
        raise ConfigError(
            "custodian_address is required: the key custodian runs in its own process "
            "(the verification service never holds the private key)"
        )
    custodian: Custodian = RemoteCustodian(
        config.custodian_address,
        tls,
        public,
        config.query_timeout_seconds * 4,
        keys.judgement_verify_key(),
    )
    witnesses = audit_witnesses(config, keys)
    if witnesses is None:
        log.warning(
            "no [witness] in the service's config: the log's checkpoints are not cosigned, and "
            "the key custodian decrypts only under a cosigned checkpoint"
        )
    return Verifier(
        registry=RegistryClient(config.registry, tls, config.registry_timeout_seconds),
        pool=ConnectorPool(
            config.connectors,
            tls=tls,
            verify_keys=verify_keys,
            public_key=public,
            timeout=config.query_timeout_seconds,
            layouts=view.batch_layouts,
        ),
        custodian=custodian,
        policy=policy or PolicyBook.builtin(config.default_region),
        audit=AuditLog(
            store,
            origin=config.log_origin,
            signing_key=keys.log_signing_key(),
            witnesses=witnesses,
        ),
        audit_key=keys.audit_token_key(),
        requests=RequestBook(config.service_database, sealer=StateSealer(keys.service_secret())),
        now=clock,
    )


def record_configuration(config: ServiceConfig, v: Verifier) -> None:
    """Log key events and setting changes since the last start (see key_events)."""
    keys = KeyDir(config.keys_dir)
    fingerprints = {
        "paillier": v.custodian.public_key.fingerprint,
        "log": ed25519_fingerprint(v.audit.public_key),
    }
    for e in config.connectors:
        fingerprints[f"connector:{e.connector_id}:signing"] = ed25519_fingerprint(
            keys.connector_verify_key(e.connector_id)
        )
    settings = {
        "min_banks": str(config.min_banks),
        "query_timeout_seconds": str(config.query_timeout_seconds),
        "default_region": config.default_region,
        "connectors": ",".join(sorted(e.connector_id for e in config.connectors)),
        "token_epoch": str(config.token_epoch),
    }
    for region in sorted(v.policy.regions):
        settings[f"policy_version:{region}"] = v.policy.version(region)
    if config.witness_vkeys:  # whose cosignatures the log's checkpoints carry
        settings["witnesses"] = ",".join(config.witness_vkeys)
        settings["witness_quorum"] = str(config.witness_quorum)
    record_startup(v.audit, keys=fingerprints, settings=settings, now=v.now())


def start_service(config: ServiceConfig, verifier: Verifier | None = None) -> RunningService:
    v = verifier or build_verifier(config)
    record_configuration(config, v)
    v.settle()  # the claims a previous life of the service left in progress
    keys = KeyDir(config.keys_dir)
    servicer = VerificationServicer(
        v,
        today=lambda: v.now().date(),
        quotas=Quotas(config.quotas(), v.now),
        batch_idle_seconds=config.batch_idle_seconds,
        gather_max_households=config.gather_max_households,
        gather_window_ms=config.gather_window_ms,
        disclosure=Disclosure(
            {c: load_public(k.read_bytes(), str(k)) for c, k in config.decision_only.items()}
        ),
    )
    auditor = AuditServicer(v.audit, v.audit_key, v.now)
    monitor = Monitor(
        v,
        WatchList(
            v.requests.engine, lambda: v.now().date(), lambda: int(v.now().timestamp() * 1000)
        ),
        AlertBook(
            v.requests.engine, lambda: v.now().date(), sealer=StateSealer(keys.service_secret())
        ),
    )
    worker = MonitorWorker(monitor, v.requests.owner)

    def register(server: grpc.Server) -> None:
        verification_pb2_grpc.add_VerificationServiceServicer_to_server(servicer, server)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(auditor, server)
        monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server(
            MonitoringServicer(monitor, worker.wake.set), server
        )
        monitoring_pb2_grpc.add_FollowUpServiceServicer_to_server(
            FollowUpServicer(monitor, servicer), server
        )

    running = create_server(
        config.address,
        tls=None if config.insecure else keys.tls("service"),
        roles={
            VERIFICATION_SERVICE: {"intake"},
            AUDIT_SERVICE: {"auditor"},
            MONITORING_SERVICE: {"connector"},
            FOLLOW_UP_SERVICE: {"intake"},
        },
        register=[register],
        # threads for the admitted verifications, a batch stream and the auditors; a call over
        # the limit of its method is answered RESOURCE_EXHAUSTED at once instead of queueing
        max_workers=config.max_concurrent_verifications + 8,
        party="service",
        admission=Admission(
            {
                f"/{VERIFICATION_SERVICE}/Verify": config.max_concurrent_verifications,
                f"/{VERIFICATION_SERVICE}/VerifyBatch": 2,
                f"/{VERIFICATION_SERVICE}/GetReport": 2,  # a PDF takes a CPU for a second
            },
            per_caller={
                f"/{VERIFICATION_SERVICE}/Verify": min(
                    config.max_concurrent_per_caller, config.max_concurrent_verifications
                ),
                f"/{VERIFICATION_SERVICE}/VerifyBatch": 1,  # one campaign at a time per intake
            },
        ),
    )
    # probed over the channels the verifications use
    dependencies = [("registry", v.registry.channel)]
    if isinstance(v.custodian, RemoteCustodian):
        dependencies.append(("key custodian", v.custodian.channel))
    storages = [
        Storage("state database", lambda: v.requests.failed, v.requests.probe_write),
        Storage("audit database", lambda: v.audit.store.failed, v.audit.store.probe_write),
    ]
    watch = DependencyWatch(running.health, [VERIFICATION_SERVICE], dependencies, storages=storages)
    watch.check()
    watch.start()
    retention = Retention(v.requests, config.retention_days, lambda: v.now().timestamp())
    retention.start()
    settler = Settler(v)
    settler.start()
    worker.start()
    return RunningService(running, v, watch, retention, settler, worker)
