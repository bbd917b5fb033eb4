"""What every party exports to Prometheus (``prometheus_client``), on its ``metrics_address``.

The metrics live in one registry per process (not the library's global one), labelled by party
where one process serves several (`hedui up` groups connectors). Nothing here carries an ID
number, a token or a figure: only method names, status codes, connector ids and counts.
"""

from __future__ import annotations

from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from hedui.core.errors import ConfigFileError, ListenError

REGISTRY = CollectorRegistry(auto_describe=True)

RPC_REQUESTS = Counter(
    "hedui_rpc_requests",
    "gRPC calls served, by party, method and status code",
    ["party", "method", "code"],
    registry=REGISTRY,
)
RPC_LATENCY = Histogram(
    "hedui_rpc_latency_seconds",
    "time to answer a gRPC call, by party and method",
    ["party", "method"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CONNECTOR_ANSWERS = Counter(
    "hedui_connector_answers",
    "answers the service received from connectors, by connector and outcome",
    ["connector", "outcome"],
    registry=REGISTRY,
)
DECRYPTIONS = Counter(
    "hedui_custodian_decryptions",
    "decryption requests at the key custodian, by method and outcome (released, refused, or "
    "unavailable: its journal or witness state could not be written)",
    ["method", "outcome"],
    registry=REGISTRY,
)
AUDIT_APPENDS = Counter(
    "hedui_audit_appends", "entries appended to the audit log", registry=REGISTRY
)
QUOTA_REFUSALS = Counter(
    "hedui_quota_refusals",
    "calls refused for a caller's quota or the service's admission limit, by kind",
    ["kind"],
    registry=REGISTRY,
)
MONITORING_EVENTS = Counter(
    "hedui_monitoring_events",
    "department events the service received (all), and those about monitored households "
    "(queued for a re-check); aggregate only, never per person",
    ["outcome"],
    registry=REGISTRY,
)
POOL_DEPTH = Gauge(
    "hedui_randomness_pool_depth",
    "precomputed Paillier obfuscators ready in this process's pool",
    registry=REGISTRY,
)


def watch_pool_depth(depth: Callable[[], int]) -> None:
    POOL_DEPTH.set_function(lambda: float(depth()))


def serve_metrics(address: str) -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` (port 0: a free one); the server (``server_port``)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigFileError(f"metrics_address {address!r} is not HOST:PORT")
    try:
        server, _thread = start_http_server(int(port), addr=host, registry=REGISTRY)
    except OSError as e:
        raise ListenError(
            f"cannot serve metrics on {address}: {e.strerror}; free the port or give another "
            "metrics_address (or HEDUI_METRICS_ADDRESS)"
        ) from None
    return server
