"""Token grants: the token authority's signed word on which tokens each connector may be asked.

For one query id the authority (the registry, which holds the register anyway) computes every
member's tokens for every connector, pads each connector's list with random fakes to a multiple
of :data:`PAD` (so a connector no longer learns the household's size), and signs one grant: the
query id, the token epoch, the number of households and, per connector, the digest of exactly
the tokens that connector is to be asked about. The aggregator can therefore no longer aim one
connector at one person, or ask the others about random tokens: a connector refuses tokens its
grant does not cover, and the custodian refuses an answer whose signed digest is not the grant's.

Each household of a grant also carries a :class:`Binding`: the applicant's audit token and the
digest of the consent or campaign it rests on (:func:`authority_digest`), both computed by the
registry from what it was actually asked. The custodian recomputes them from the logged request
entries, so an insider of the service cannot log one applicant and have another's household
decrypted, or log one consent and have the registry shown another. The binding also holds the
digest of the household's members as the registry answered them: the custodian applies the
programme's rules to exactly that household (issue #24).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
from collections.abc import Callable, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.core import signing
from hedui.core.errors import CryptoError
from hedui.proto.v1 import connector_pb2

PAD = 8  # token lists are padded to a multiple of this, at least this many
TOKEN_BYTES = 32
MAX_BATCH = (
    1024  # households per batch query: the registry grants, connectors and custodian bound it
)
GRANT_TTL_MS = 10 * 60 * 1000  # a connector refuses a grant older than this
_LABEL = b"hedui/token-grant/v1"
_AUTHORITY_LABEL = b"hedui/authority/v1"
_BINDINGS_LABEL = b"hedui/grant-bindings/v1"


def framed(parts: Sequence[bytes]) -> bytes:
    """Length-prefixed parts: what every digest of this module (and the judgements') is over."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def authority_digest(
    *,
    program: str,
    campaign: str,
    case_number: str,
    signed_on: str,
    form_sha256: bytes,
    signer_audit_tokens: Sequence[bytes],
) -> bytes:
    """The digest of the authorisation one household was granted under, for ``program``: a
    registered campaign (its document number, which the registry keeps unique, its date and its
    document's digest, as registered) or a signed consent (its case number, date, form digest
    and the signers' audit tokens, in any order)."""
    if campaign:
        parts = [_AUTHORITY_LABEL, b"campaign", program.encode(), campaign.encode()]
        parts += [signed_on.encode(), form_sha256]
    else:
        parts = [
            _AUTHORITY_LABEL,
            b"consent",
            program.encode(),
            case_number.encode(),
            signed_on.encode(),
            form_sha256,
            *sorted(set(signer_audit_tokens)),
        ]
    return hashlib.sha256(framed(parts)).digest()


@dataclasses.dataclass(frozen=True)
class Binding:
    """What one household of a grant was granted for (see the module's docstring)."""

    applicant_audit_token: bytes
    authority: bytes
    # the digest of the household's members as the registry answered them (see
    # hedui.core.judgement.composition_digest): the household the custodian applies rules to
    composition: bytes = b""

    @property
    def asked(self) -> tuple[bytes, bytes]:
        """What the logged request entry must say: the applicant and the authorisation."""
        return self.applicant_audit_token, self.authority


def padded(
    tokens: Sequence[bytes], rng: Callable[[int], bytes] = secrets.token_bytes
) -> list[bytes]:
    """The tokens with random fakes added up to the next multiple of :data:`PAD`, sorted (the
    order tells nothing of which are real)."""
    fakes = max(PAD, math.ceil(len(tokens) / PAD) * PAD) - len(tokens)
    noise = rng(TOKEN_BYTES * fakes)  # one call for all the fakes
    return sorted(
        [*tokens, *(noise[i : i + TOKEN_BYTES] for i in range(0, len(noise), TOKEN_BYTES))]
    )


@dataclasses.dataclass(frozen=True)
class Grant:
    query_id: str
    epoch: int
    households: int
    issued_unix_ms: int
    digests: tuple[tuple[str, bytes], ...]  # (connector id, token digest), sorted by id
    signature: bytes = b""
    bindings: tuple[Binding, ...] = ()  # one per household, in the grant's household order
    # the bindings are hidden from connectors (issue #26 review): the signature covers their
    # digest under a random salt; a grant as a connector receives it holds only that digest
    binding_salt: bytes = b""
    sealed: bytes = b""  # the bindings' digest, when the bindings themselves are not given
    # with decoys: (household stride, households per ciphertext) the selectors were made for
    placement: tuple[int, int] = (0, 0)

    @property
    def bindings_digest(self) -> bytes:
        if not self.bindings:
            return self.sealed
        parts = [_BINDINGS_LABEL, self.binding_salt]
        for b in self.bindings:
            parts += [b.applicant_audit_token, b.authority, b.composition]
        return hashlib.sha256(framed(parts)).digest()

    def signed_bytes(self) -> bytes:
        parts = [
            _LABEL,
            self.query_id.encode(),
            str(self.epoch).encode(),
            str(self.households).encode(),
            str(self.issued_unix_ms).encode(),
        ]
        for cid, digest in self.digests:
            parts += [cid.encode(), digest]
        parts += [b"bindings", self.bindings_digest]
        if self.placement != (0, 0):
            parts += [b"placement", "{}:{}".format(*self.placement).encode()]
        return framed(parts)

    def digest_for(self, connector_id: str) -> bytes | None:
        for cid, digest in self.digests:
            if cid == connector_id:
                return digest
        return None

    @property
    def connectors(self) -> frozenset[str]:
        return frozenset(c for c, _ in self.digests)

    def for_connectors(self) -> connector_pb2.TokenGrant:
        """The grant as a connector receives it: the bindings' digest, not the bindings."""
        pb = self.to_pb()
        pb.ClearField("bindings")
        pb.binding_salt = b""
        return pb

    def to_pb(self) -> connector_pb2.TokenGrant:
        return connector_pb2.TokenGrant(
            query_id=self.query_id,
            epoch=self.epoch,
            households=self.households,
            issued_unix_ms=self.issued_unix_ms,
            digests=[
                connector_pb2.ConnectorDigest(connector_id=c, digest=d) for c, d in self.digests
            ],
            signature=self.signature,
            bindings=[
                connector_pb2.HouseholdBinding(
                    applicant_audit_token=b.applicant_audit_token,
                    authority=b.authority,
                    composition=b.composition,
                )
                for b in self.bindings
            ],
            binding_salt=self.binding_salt,
            bindings_digest=self.bindings_digest,
            household_stride=self.placement[0],
            households_per_ciphertext=self.placement[1],
        )

    @classmethod
    def from_pb(cls, pb: connector_pb2.TokenGrant) -> Grant:
        return cls(
            pb.query_id,
            int(pb.epoch),
            int(pb.households),
            int(pb.issued_unix_ms),
            tuple((d.connector_id, bytes(d.digest)) for d in pb.digests),
            bytes(pb.signature),
            tuple(
                Binding(bytes(b.applicant_audit_token), bytes(b.authority), bytes(b.composition))
                for b in pb.bindings
            ),
            bytes(pb.binding_salt),
            bytes(pb.bindings_digest),
            (int(pb.household_stride), int(pb.households_per_ciphertext)),
        )


def issue(
    key: Ed25519PrivateKey,
    *,
    query_id: str,
    epoch: int,
    households: int,
    issued_unix_ms: int,
    digests: Mapping[str, bytes],
    bindings: Sequence[Binding],
    placement: tuple[int, int] = (0, 0),
) -> Grant:
    if len(bindings) != households:
        raise CryptoError(f"{len(bindings)} bindings for {households} households")
    unsigned = Grant(
        query_id,
        epoch,
        households,
        issued_unix_ms,
        tuple(sorted(digests.items())),
        bindings=tuple(bindings),
        binding_salt=secrets.token_bytes(32),
        placement=placement,
    )
    return dataclasses.replace(unsigned, signature=signing.sign(key, unsigned.signed_bytes()))


def verify(key: Ed25519PublicKey, grant: Grant) -> None:
    """Raise :class:`CryptoError` unless the token authority signed this grant."""
    ids = [c for c, _ in grant.digests]
    if ids != sorted(set(ids)):
        raise CryptoError("the grant names a connector twice or out of order")
    if grant.bindings and grant.sealed and grant.sealed != grant.bindings_digest:
        raise CryptoError("the grant's bindings are not the ones its digest names")
    signing.verify(key, grant.signed_bytes(), grant.signature)


def batch_digest(
    households: Sequence[Sequence[bytes]], selectors: Sequence[Sequence[bytes]] = ()
) -> bytes:
    """The digest a grant holds for one connector: every household's token digest (with its
    tokens' selectors, when decoys are on), in order."""
    return signing.batch_queried(households, selectors)
