"""What the verification service and the key custodian exchange, as both see it.

The custodian's picture of the deployment (:func:`custodian_view`: which connectors are banks,
who holds which field, the slot layouts every answer is packed in), the totals it releases and
the evidence that a query is in the audit log, with their wire forms. Both parties build on
this one definition; neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hedui.core import packing
from hedui.core.deployment import kind_of
from hedui.core.packing import BatchLayout
from hedui.proto.v1 import custodian_pb2

CUSTODIAN_ID = "custodian"  # the custodian's certificate and server name
CUSTODIAN_SERVICE = custodian_pb2.DESCRIPTOR.services_by_name["CustodianService"].full_name


@dataclass(frozen=True)
class Totals:
    values: Mapping[str, int]
    refused: Mapping[str, str] = field(default_factory=dict)  # field -> reason
    # field -> the connectors whose figure the custodian found missing (a damaged row counted)
    missing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggedRequest:
    leaf_index: int
    entry: bytes
    inclusion_proof: tuple[bytes, ...]


@dataclass(frozen=True)
class LogEvidence:
    checkpoint: bytes
    requests: tuple[LoggedRequest, ...]
    witness_size: int  # the custodian's last witnessed size, as the prover believes it
    consistency_proof: tuple[bytes, ...]  # between witness_size and the checkpoint's size


# The evidence that a query is logged, for the custodian's last witnessed tree size.
EvidenceSource = Callable[[int], LogEvidence]


@dataclass(frozen=True)
class Deployment:
    """What the custodian knows of the deployment: keys, banks, the connectors of each kind,
    and the slot layout every answer of a kind must be packed in."""

    verify_keys: Mapping[str, Ed25519PublicKey]
    banks: frozenset[str]
    kinds: Mapping[str, frozenset[str]] = field(default_factory=dict)  # kind -> its connectors
    batch_layouts: Mapping[str, BatchLayout] = field(default_factory=dict)  # kind -> layout
    authority_key: Ed25519PublicKey | None = None  # the token authority's grant key


def custodian_view(
    connector_ids: Sequence[str],
    verify_keys: Mapping[str, Ed25519PublicKey],
    plaintext_bits: int,
    authority_key: Ed25519PublicKey | None = None,
) -> Deployment:
    """The custodian's own picture of the deployment: from the connector ids and their kinds,
    never from what the connectors say of themselves."""
    kinds: dict[str, set[str]] = {}
    for cid in connector_ids:
        kinds.setdefault(kind_of(cid).kind, set()).add(cid)
    return Deployment(
        verify_keys=verify_keys,
        banks=frozenset(c for c in connector_ids if kind_of(c).is_bank),
        kinds={k: frozenset(v) for k, v in kinds.items()},
        batch_layouts=layouts_of(connector_ids, plaintext_bits),
        authority_key=authority_key,
    )


def layouts_of(connector_ids: Sequence[str], plaintext_bits: int) -> dict[str, BatchLayout]:
    """Every connector kind's layout in a deployment of these connectors, one household stride
    for all (:func:`hedui.core.packing.uniform_layouts`): what the service asks in, the
    custodian decrypts by and the token authority places decoy selectors for."""
    kinds: dict[str, tuple[list[tuple[str, int]], int]] = {}
    for cid in sorted(set(connector_ids)):
        kind = kind_of(cid)
        fields, holders = kinds.get(kind.kind, ([(f.name, f.max_value) for f in kind.fields], 0))
        kinds[kind.kind] = (fields, holders + 1)
    return packing.uniform_layouts(kinds, plaintext_bits)


def evidence_from_pb(pb: custodian_pb2.LogEvidence) -> LogEvidence:
    return LogEvidence(
        bytes(pb.checkpoint),
        tuple(
            LoggedRequest(int(r.leaf_index), bytes(r.entry), tuple(r.inclusion_proof))
            for r in pb.requests
        ),
        int(pb.witness_size),
        tuple(pb.consistency_proof),
    )


def evidence_pb(e: LogEvidence) -> custodian_pb2.LogEvidence:
    return custodian_pb2.LogEvidence(
        checkpoint=e.checkpoint,
        requests=[
            custodian_pb2.LoggedRequest(
                leaf_index=r.leaf_index, entry=r.entry, inclusion_proof=r.inclusion_proof
            )
            for r in e.requests
        ],
        witness_size=e.witness_size,
        consistency_proof=e.consistency_proof,
    )
