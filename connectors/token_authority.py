"""The token authority, hosted by the household registry (which holds every ID anyway).

It holds the OPRF key of the current token epoch (RFC 9497, :mod:`hedui.core.oprf`) and the
Ed25519 key that signs grants. Two things only it can do:

- at query time, turn the members of a household into each connector's tokens, pad every
  connector's list with random fakes, and sign the grant that binds the query id to exactly
  those tokens (:mod:`hedui.core.grants`);
- at import time, evaluate blinded elements for a connector (:class:`TokenAuthorityServicer`),
  counted per connector over a rolling window: beyond its allowance the call is refused and an
  alert is recorded, so a connector cannot evaluate the population to recover who is who.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.rpc import error_details_pb2

from hedui.connectors.decoys import DecoyGroups
from hedui.connectors.errors import ConnectorError
from hedui.connectors.store import RegisterStore
from hedui.core import grants, packing, rpc
from hedui.core.clock import DEPLOYMENT, Clock
from hedui.core.custody import layouts_of
from hedui.core.errors import CryptoError
from hedui.core.grants import Grant
from hedui.core.oprf import ServerKey
from hedui.core.paillier import PublicKey
from hedui.core.selectors import selector_set
from hedui.core.tls import INSECURE_PEER
from hedui.core.tokens import connector_token
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc

log = logging.getLogger("hedui.connectors.token_authority")

MAX_ELEMENTS = 1024  # per BlindEvaluate call
WINDOW_DAYS = 30
MONITOR_DAYS = 3 * 366  # the longest a monitoring handle is issued for


class HandleRefused(ConnectorError):
    """A monitoring handle the registry holds no record of, past its date, or used under
    another campaign than its own (:mod:`hedui.connectors.handles`)."""


# k: a household asked about among k - 1 decoy households (design §5). 4 by default, on both
# paths: a bank's best guess of the applicant is then right about 1 time in 4, at a Verify p50
# within the noise of k = 1 (BENCHMARKS.md, issue #26).
DEFAULT_DECOYS = 4
MAX_DECOYS = 8


@dataclass(frozen=True)
class AuthoritySettings:
    connector_ids: tuple[str, ...]  # every connector of the deployment, tokens for each
    allowances: Mapping[str, int] = field(default_factory=dict)  # evaluations per window
    default_allowance: int = 1000
    source: Path | None = None  # the registry's authority.toml, named to a connector not in it
    # k per path (issue #26): a household is asked about with the other households of its decoy
    # group (at least k in all); 1: none. Where not 1, the same on both paths (one partition).
    decoys_interactive: int = 1
    decoys_campaign: int = 1


@dataclass(frozen=True)
class HouseholdTokens:
    """A household's tokens for every connector, and with decoys its encrypted selectors."""

    tokens: Mapping[str, list[bytes]]  # per connector, sorted
    selectors: list[bytes] = field(default_factory=list)  # the household's set; [] = no decoys
    index: Mapping[str, list[int]] = field(default_factory=dict)  # per token, its selector
    own: Mapping[str, list[bytes]] = field(default_factory=dict)  # the members' tokens only

    def selected(self, connector_id: str) -> list[bytes]:
        """Each of the connector's tokens' selector ([] without decoys)."""
        if not self.selectors:
            return []
        return [self.selectors[i] for i in self.index[connector_id]]

    def token_set(self, connector_id: str) -> connector_pb2.TokenSet:
        """What the connector is asked about for this household: its tokens and selectors."""
        return connector_pb2.TokenSet(
            tokens=self.tokens[connector_id], selectors=self.selected(connector_id)
        )

    @classmethod
    def from_pb(cls, household: connector_pb2.Household) -> HouseholdTokens:
        return cls(
            {t.connector_id: list(t.tokens) for t in household.tokens},
            list(household.selectors),
            {t.connector_id: list(t.selector_index) for t in household.tokens},
        )


class TokenAuthority:
    def __init__(
        self,
        key: ServerKey,
        epoch: int,
        grant_key: Ed25519PrivateKey,
        settings: AuthoritySettings,
        clock: Clock = DEPLOYMENT,
        *,
        public: PublicKey | None = None,
        register: RegisterStore | None = None,
    ) -> None:
        ks = {settings.decoys_interactive, settings.decoys_campaign}
        if not all(1 <= k <= MAX_DECOYS for k in ks) or len(ks - {1}) > 1:
            raise ConnectorError(
                f"decoys: k must be 1 to {MAX_DECOYS}, and the same on both paths where it is "
                f"not 1, not {settings.decoys_interactive} and {settings.decoys_campaign} (one "
                "partition of the register serves both: connectors would intersect two)"
            )
        if max(settings.decoys_interactive, settings.decoys_campaign) > 1 and (
            public is None or register is None
        ):
            raise ConnectorError(
                "decoy households need the key custodian's public key for their selectors: copy "
                "custodian/paillier.pub into the registry's key directory (README, step 3), or "
                "set decoys_interactive = decoys_campaign = 1 in authority.toml"
            )
        self._public = public
        # where household i of a batch sits in every kind's plaintext: its members' selectors
        # are made for those bits (the grant names the placement; hedui.core.selectors)
        self.placement = (
            packing.placement(
                layouts_of(settings.connector_ids, public.max_plaintext_bits).values()
            )
            if public is not None and settings.connector_ids
            else (0, 0)
        )
        self._key = key
        self.epoch = epoch
        self._grant_key = grant_key
        self.settings = settings
        self._clock = clock
        # the padding key: derived from the epoch's OPRF key, so only the authority holds it
        self._pad_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"hedui/token-padding/v1"
        ).derive(key.private_key + epoch.to_bytes(4, "big"))
        # the key of the decoy groups' shuffle: from the grant key, which a token-epoch rotation
        # keeps, so a household's group is the same in every epoch (a new one per epoch would
        # let a connector intersect a household's two groups)
        decoy_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"hedui/decoy-groups/v1"
        ).derive(grant_key.private_bytes_raw())
        k = max(settings.decoys_interactive, settings.decoys_campaign)
        self.groups = (
            DecoyGroups(register, decoy_key, k) if register is not None and k > 1 else None
        )
        # from the grant key, which a token-epoch rotation keeps: a case number stays bound
        # to its household across epochs
        self._pseudonym_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"hedui/household-pseudonym/v1"
        ).derive(grant_key.private_bytes_raw())

    def pseudonym(self, household_id: str) -> bytes:
        """The household's pseudonym for the service (case numbers are bound to it): a keyed
        hash of its register number under a key only the authority holds, the same in every
        token epoch."""
        return hmac.digest(self._pseudonym_key, household_id.encode(), "sha256")

    def tokens(
        self, id_numbers: Sequence[str], household_id: str, decoys: int = 1, position: int = 0
    ) -> HouseholdTokens:
        """Every connector's padded tokens for these members: one PRF evaluation per member,
        then one HMAC per member and connector. The fakes are the same every time the same
        household is asked about (a keyed stream per household and connector): fresh random
        fakes would let a connector intersect two queries of one household and count it.

        With ``decoys`` = k > 1 (issue #26), the members of the k - 1 other households of its
        decoy group come too (:mod:`hedui.connectors.decoys`: the same throughout the token
        epoch), and every token with its encrypted selector
        (:func:`hedui.core.selectors.selector_set`): only the members' select, at the slots
        of the household's ``position`` in the grant's batch (:attr:`placement`)."""
        chosen: list[str] = []
        fakes_of = household_id
        if decoys > 1 and self.groups is not None:
            group, decoy_residents = self.groups.residents(household_id)
            members = set(id_numbers)
            chosen = [i for i in decoy_residents if i not in members]
            fakes_of = f"group {group.name}"  # the same fakes whichever household is asked
        residents = [*id_numbers, *chosen]
        outputs = [self._key.evaluate(i.encode("ascii")) for i in residents]
        own = {
            cid: [connector_token(y, cid) for y in outputs[: len(id_numbers)]]
            for cid in self.settings.connector_ids
        }
        if decoys <= 1 or self.groups is None:
            return HouseholdTokens(
                {
                    cid: grants.padded(own[cid], self._fakes(household_id, cid))
                    for cid in self.settings.connector_ids
                },
                own=own,
            )
        assert self._public is not None
        total = max(grants.PAD, -(-len(residents) // grants.PAD) * grants.PAD)
        stride, per_ciphertext = self.placement
        place = position % per_ciphertext * stride
        selectors, at = selector_set(self._public, len(id_numbers), total, place)
        tokens: dict[str, list[bytes]] = {}
        index: dict[str, list[int]] = {}
        for cid in self.settings.connector_ids:
            noise = self._fakes(fakes_of, cid)(grants.TOKEN_BYTES * (total - len(residents)))
            fakes = [noise[i : i + grants.TOKEN_BYTES] for i in range(0, len(noise), 32)]
            decoy_tokens = [connector_token(y, cid) for y in outputs[len(id_numbers) :]]
            pairs = sorted(zip([*own[cid], *decoy_tokens, *fakes], at, strict=True))
            tokens[cid] = [t for t, _ in pairs]
            index[cid] = [i for _, i in pairs]
        return HouseholdTokens(tokens, selectors, index, own)

    def decoys_for(self, campaign: bool) -> int:
        """k of a path: the campaign's or the interactive one's."""
        s = self.settings
        return s.decoys_campaign if campaign else s.decoys_interactive

    def _fakes(self, household_id: str, connector_id: str) -> Callable[[int], bytes]:
        seed = hmac.digest(self._pad_key, f"{household_id}\0{connector_id}".encode(), "sha256")

        def stream(n: int) -> bytes:
            blocks = (n + 31) // 32
            out = b"".join(hmac.digest(seed, i.to_bytes(4, "big"), "sha256") for i in range(blocks))
            return out[:n]

        return stream

    def grant(
        self,
        query_id: str,
        households: Sequence[HouseholdTokens],
        bindings: Sequence[grants.Binding],
    ) -> Grant:
        """The grant of a query about one or many households: per connector, the digest of
        every household's tokens in order, each with its selector when decoys are on (the
        digest its QueryBatch answer signs), and what each household was granted for
        (``bindings``, in the same order)."""
        digests = {
            cid: grants.batch_digest(
                [h.tokens[cid] for h in households], [h.selected(cid) for h in households]
            )
            for cid in self.settings.connector_ids
        }
        return grants.issue(
            self._grant_key,
            query_id=query_id,
            epoch=self.epoch,
            households=len(households),
            issued_unix_ms=int(self._clock.now().timestamp() * 1000),
            digests=digests,
            bindings=bindings,
            placement=self.placement if any(h.selectors for h in households) else (0, 0),
        )

    def now(self) -> dt.datetime:
        return self._clock.now()

    def blind_evaluate(self, elements: Sequence[bytes]) -> list[bytes]:
        return self._key.blind_evaluate(elements)

    def allowance(self, connector_id: str) -> int:
        return self.settings.allowances.get(connector_id, self.settings.default_allowance)


class TokenAuthorityServicer(connector_pb2_grpc.TokenAuthorityServiceServicer):
    """Blinded evaluation for connectors' imports, counted and capped per connector."""

    def __init__(self, authority: TokenAuthority, store: RegisterStore) -> None:
        self._authority = authority
        self._store = store
        self._lock = threading.Lock()

    def BlindEvaluate(
        self, request: connector_pb2.BlindEvaluateRequest, context: grpc.ServicerContext
    ) -> connector_pb2.BlindEvaluateResponse:
        a = self._authority
        if request.epoch != a.epoch:
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the token epoch is {a.epoch}, not {request.epoch}",
                rpc.precondition_failure("TOKEN_EPOCH", str(a.epoch), "import under this epoch"),
            )
        n = len(request.blinded_elements)
        if not 1 <= n <= MAX_ELEMENTS:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"1 to {MAX_ELEMENTS} blinded elements per call",
                rpc.bad_request("blinded_elements", f"{n} given"),
            )
        caller = rpc.caller(context).name
        if caller not in a.settings.connector_ids and caller != INSECURE_PEER.name:
            # the authority makes no tokens for it at query time either: its import would be
            # of no use, so it is told why rather than charged against a default allowance
            where = a.settings.source or "the token authority's settings"
            log.warning("connector=%s is not listed in %s; evaluation refused", caller, where)
            rpc.abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{caller} is not listed in authority.toml ({where}): add it to connectors = "
                "[...] there (its allowance, if not the default, under [allowances]) and restart "
                "the registry",
                rpc.precondition_failure(
                    "CONNECTOR_NOT_LISTED", caller, "list it in the registry's authority.toml"
                ),
            )
        account = f"{caller}/epoch-{a.epoch}"  # a new epoch is a new allowance
        now = a.now()
        days = [(now.date() - dt.timedelta(days=i)).isoformat() for i in range(WINDOW_DAYS)]
        allowance = a.allowance(caller)
        with self._lock:
            used = self._store.use_evaluations(
                account, days[0], days, n, allowance, int(now.timestamp() * 1000)
            )
        if used is not None:
            log.warning(
                "ALERT connector=%s asked for %d evaluations, %d used of %d in %d days",
                caller,
                n,
                used,
                allowance,
                WINDOW_DAYS,
            )
            rpc.abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{caller} has used {used} of its {allowance} token evaluations in "
                f"{WINDOW_DAYS} days; this request for {n} more was refused and recorded",
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=caller,
                            description=f"{allowance} evaluations per {WINDOW_DAYS} days",
                        )
                    ]
                ),
            )
        try:
            evaluated = a.blind_evaluate(list(request.blinded_elements))
        except CryptoError:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "a blinded element is not a valid ristretto255 element",
                rpc.bad_request("blinded_elements", "32-byte canonical ristretto255 encodings"),
            )
        return connector_pb2.BlindEvaluateResponse(epoch=a.epoch, evaluated_elements=evaluated)
