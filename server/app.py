"""Assemble and start the verification service from its configuration."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core import packing
from hedui.core.deployment import kind_of
from hedui.core.keystore import KeyDir
from hedui.core.rpc import RunningServer, create_server
from hedui.proto.v1 import audit_pb2, audit_pb2_grpc, verification_pb2, verification_pb2_grpc
from hedui.server.audit_service import AuditServicer
from hedui.server.batch import BatchVerifier
from hedui.server.config import ServiceConfig
from hedui.server.custodian import Deployment, KeyCustodian
from hedui.server.errors import ConfigError
from hedui.server.fanout import ConnectorPool, RegistryClient
from hedui.server.key_events import ed25519_fingerprint, record_startup
from hedui.server.policy.book import PolicyBook
from hedui.server.requests import RequestBook
from hedui.server.verification import VerificationServicer, Verifier

VERIFICATION_SERVICE = verification_pb2.DESCRIPTOR.services_by_name["VerificationService"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name


@dataclass
class RunningService:
    server: RunningServer
    verifier: Verifier

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace)
        self.verifier.pool.close()
        self.verifier.registry.close()


def custodian_view(
    config: ServiceConfig, verify_keys: Mapping[str, Ed25519PublicKey], plaintext_bits: int
) -> Deployment:
    """The custodian's own picture of the deployment, from the configuration and kinds."""
    holders: dict[str, set[str]] = {}
    kinds: dict[str, set[str]] = {}
    for e in config.connectors:
        kinds.setdefault(kind_of(e.connector_id).kind, set()).add(e.connector_id)
        for name in kind_of(e.connector_id).field_names:
            holders.setdefault(name, set()).add(e.connector_id)
    return Deployment(
        verify_keys=verify_keys,
        banks=frozenset(
            e.connector_id for e in config.connectors if kind_of(e.connector_id).is_bank
        ),
        holders={k: frozenset(v) for k, v in holders.items()},
        layout=packing.for_connectors(e.connector_id for e in config.connectors),
        kinds={k: frozenset(v) for k, v in kinds.items()},
        batch_layouts={
            k: packing.batch_layout(
                [(f.name, f.max_value) for f in kind_of(next(iter(v))).fields],
                len(v),
                plaintext_bits,
            )
            for k, v in kinds.items()
        },
    )


def build_verifier(
    config: ServiceConfig,
    *,
    now: Callable[[], dt.datetime] | None = None,
    policy: PolicyBook | None = None,
) -> Verifier:
    keys = KeyDir(config.keys_dir)
    tls = None if config.insecure else keys.tls("service")
    private = keys.paillier_private()
    verify_keys = {
        e.connector_id: keys.connector_verify_key(e.connector_id) for e in config.connectors
    }
    zone = ZoneInfo(config.timezone)
    clock = now or (lambda: dt.datetime.now(zone))
    store = LogStore(open_log_engine(config.audit_database))
    view = custodian_view(config, verify_keys, private.public.max_plaintext_bits)
    if not view.layout.fits(private.public.max_plaintext_bits):
        raise ConfigError(
            f"the Paillier key ({private.public.bits} bits) is too small for this deployment's "
            f"slot layout ({view.layout.total_bits} bits); create 2048-bit keys"
        )
    return Verifier(
        registry=RegistryClient(config.registry, tls, config.registry_timeout_seconds),
        pool=ConnectorPool(
            config.connectors,
            tls=tls,
            verify_keys=verify_keys,
            public_key=private.public,
            token_master=keys.token_master(config.token_epoch),
            timeout=config.query_timeout_seconds,
            layout=view.layout,
        ),
        custodian=KeyCustodian(private, view, min_banks=config.min_banks),
        policy=policy or PolicyBook.builtin(config.default_region),
        audit=AuditLog(store, origin=config.log_origin, signing_key=keys.log_signing_key()),
        audit_key=keys.audit_token_key(),
        requests=RequestBook(config.service_database),
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
    record_startup(v.audit, keys=fingerprints, settings=settings, now=v.now())


def start_service(config: ServiceConfig, verifier: Verifier | None = None) -> RunningService:
    v = verifier or build_verifier(config)
    record_configuration(config, v)
    keys = KeyDir(config.keys_dir)
    servicer = VerificationServicer(v, BatchVerifier(v), today=lambda: v.now().date())
    auditor = AuditServicer(v.audit, v.audit_key, v.now)

    def register(server: grpc.Server) -> None:
        verification_pb2_grpc.add_VerificationServiceServicer_to_server(servicer, server)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(auditor, server)

    running = create_server(
        config.address,
        tls=None if config.insecure else keys.tls("service"),
        roles={VERIFICATION_SERVICE: {"intake"}, AUDIT_SERVICE: {"auditor"}},
        register=[register],
        max_workers=16,
    )
    return RunningService(running, v)
