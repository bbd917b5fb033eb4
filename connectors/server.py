"""Start reference connectors (registry, departments, banks) as gRPC servers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from hedui.connectors.campaigns import Campaigns, CampaignServicer
from hedui.connectors.errors import ConnectorError
from hedui.connectors.integrity import RowSeal
from hedui.connectors.registry import RegistryServicer
from hedui.connectors.sdk import Answerer, ConnectorServicer, GrantPolicy
from hedui.connectors.store import HoldingStore, RegisterStore, open_engine
from hedui.connectors.token_authority import (
    AuthoritySettings,
    TokenAuthority,
    TokenAuthorityServicer,
)
from hedui.core import metrics
from hedui.core.clock import DEFAULT_TIMEZONE, Clock
from hedui.core.deployment import kind_of
from hedui.core.keystore import KeyDir
from hedui.core.paillier import PublicKey
from hedui.core.rpc import RunningServer, create_server
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc

log = logging.getLogger("hedui.connectors.server")

CONNECTOR_SERVICE = connector_pb2.DESCRIPTOR.services_by_name["ConnectorService"].full_name
REGISTRY_SERVICE = connector_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
CAMPAIGN_SERVICE = connector_pb2.DESCRIPTOR.services_by_name["CampaignService"].full_name
TOKEN_AUTHORITY_SERVICE = connector_pb2.DESCRIPTOR.services_by_name[
    "TokenAuthorityService"
].full_name


@dataclass(frozen=True)
class ConnectorSettings:
    connector_id: str
    database_url: str
    address: str = "127.0.0.1:0"
    insecure: bool = False
    max_workers: int = 4
    randomness_pool: int = 512  # obfuscators made ahead of time per process (0: none)
    timezone: str = DEFAULT_TIMEZONE  # the deployment's: "today" for ID birth dates
    keys_dir: Path | None = None  # the party's own key directory (`hedui serve`)
    authority_config: Path | None = None  # the registry's token authority settings
    metrics_address: str = ""  # HOST:PORT of its Prometheus /metrics ("" = none)


_PUBLIC_KEYS: dict[bytes, PublicKey] = {}


def shared_public_key(keys: KeyDir, pool_size: int) -> PublicKey:
    """One Paillier public key per process (by fingerprint: each connector holds its own copy
    of the file), with one pool of fresh randomness that every connector of the process draws
    from (a pool's table is several megabytes)."""
    key = keys.paillier_public()
    if key.fingerprint not in _PUBLIC_KEYS:
        if pool_size and key.hs is not None:
            pool = key.start_pool(pool_size)
            metrics.watch_pool_depth(lambda: len(pool))
        _PUBLIC_KEYS[key.fingerprint] = key
    return _PUBLIC_KEYS[key.fingerprint]


def start_connector(settings: ConnectorSettings, keys: KeyDir) -> RunningServer:
    """Serve one bank or department connector; only the verification service may query it,
    and only about tokens the token authority granted."""
    store = HoldingStore(
        open_engine(settings.database_url),
        RowSeal(keys.connector_integrity_key(settings.connector_id), settings.connector_id),
    )
    epoch = store.token_epoch()
    check = store.token_key_check()
    if epoch is None or check is None:
        raise ConnectorError(
            f"{settings.connector_id}: its database holds no import; import its data first "
            "(`hedui connector import`)"
        )
    answerer = Answerer(
        settings.connector_id,
        kind_of(settings.connector_id),
        store,
        shared_public_key(keys, settings.randomness_pool),
        keys.connector_signing_key(settings.connector_id),
        check,
        GrantPolicy(keys.grant_verify_key(), epoch, Clock(settings.timezone)),
    )
    # every stored row and the data set's seal, checked once at start: damaged rows are named
    # to the operator (and refused whenever a query touches them); rows added or removed
    # make the connector refuse every query
    problems = store.verify_all()
    for problem in problems[:20]:
        log.error("%s: stored data fails its integrity check: %s", settings.connector_id, problem)
    broken = problems[0] if problems and problems[0].startswith("the data set") else None
    servicer = ConnectorServicer(answerer, broken=broken)

    def register(server: grpc.Server) -> None:
        connector_pb2_grpc.add_ConnectorServiceServicer_to_server(servicer, server)

    return create_server(
        settings.address,
        tls=None if settings.insecure else keys.tls(settings.connector_id),
        roles={CONNECTOR_SERVICE: {"service"}},
        register=[register],
        max_workers=settings.max_workers,
        party=settings.connector_id,
    )


def start_registry(
    settings: ConnectorSettings, keys: KeyDir, authority: AuthoritySettings
) -> RunningServer:
    """The household register and the token authority: the service asks it for households
    (with their tokens and grants), connectors for blinded evaluations at import."""
    clock = Clock(settings.timezone)
    store = RegisterStore(open_engine(settings.database_url))
    epoch = keys.token_epoch()
    decoys = max(authority.decoys_interactive, authority.decoys_campaign) > 1
    public = keys.paillier_public() if decoys else None
    if public is not None:
        public.start_pool()  # the selectors' fresh randomness, made ahead of time
    ta = TokenAuthority(
        keys.oprf_key(epoch),
        epoch,
        keys.grant_signing_key(),
        authority,
        clock,
        public=public,
        register=store,
    )
    campaigns = Campaigns(store, clock)
    registry = RegistryServicer(store, ta, campaigns, keys.registry_audit_token_key(), clock)
    evaluator = TokenAuthorityServicer(ta, store)

    def register(server: grpc.Server) -> None:
        connector_pb2_grpc.add_RegistryServiceServicer_to_server(registry, server)
        connector_pb2_grpc.add_TokenAuthorityServiceServicer_to_server(evaluator, server)
        connector_pb2_grpc.add_CampaignServiceServicer_to_server(
            CampaignServicer(campaigns), server
        )

    return create_server(
        settings.address,
        tls=None if settings.insecure else keys.tls(settings.connector_id),
        roles={
            REGISTRY_SERVICE: {"service"},
            TOKEN_AUTHORITY_SERVICE: {"connector"},
            # ListCampaigns is read by the service too; RegisterCampaign checks the role itself
            CAMPAIGN_SERVICE: {"bureau", "service"},
        },
        register=[register],
        max_workers=settings.max_workers,
        party=settings.connector_id,
    )
