"""Integrity of the figures a connector stores (issue #10).

Every stored row (token, field, value) carries an HMAC-SHA256 under the connector's own
integrity key (``keys/connectors/<id>/integrity.key``), made at import and checked whenever the
row is read to answer a query; the data set as a whole (how many rows, how many people, the
token epoch) carries one more. A changed byte in a figure therefore makes the connector mark the
household that row belongs to (no figure for it, signed; the household is NEEDS_REVIEW naming
the connector, never answered with an altered figure) while it answers the other households of
the query, or refuse the query when that household is all it asks about; rows added or removed
while it was stopped make it refuse every query.

What it does not protect against: an insider who holds the connector's integrity key (the bank's
own administrator) can rewrite figures and their MACs at will; that is the connector lying about
its own data, which no storage check can stop. Rows deleted while the connector runs are noticed
at its next start, not before.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from hedui.connectors.errors import ConnectorError

_ROW = b"hedui/holding/v1"
_SET = b"hedui/holding-set/v1"


class DataIntegrityError(ConnectorError):
    """Stored figures whose MAC does not verify; the message names rows, never figures.

    Raised while answering a batch, it may also say which households the damaged rows belong
    to (``households``, their indices in the query) and carry every household's sums with
    those rows left out (``sums``), so that the connector can answer the other households and
    mark these; without them the whole query is refused."""

    def __init__(
        self,
        message: str,
        rows: list[str],
        households: tuple[int, ...] = (),
        sums: list[dict[str, int]] | None = None,
    ) -> None:
        super().__init__(message)
        self.rows = rows
        self.households = households
        self.sums = sums


@dataclass(frozen=True)
class RowSeal:
    """The MACs of one connector's stored rows."""

    key: bytes
    connector_id: str

    def row(self, token: bytes, field: str, value: int) -> bytes:
        parts = [_ROW, self.connector_id.encode(), token, field.encode(), str(value).encode()]
        msg = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
        return hmac.digest(self.key, msg, "sha256")

    def data_set(self, rows: int, population: int, epoch: int, check: bytes) -> bytes:
        parts = [
            _SET,
            self.connector_id.encode(),
            str(rows).encode(),
            str(population).encode(),
            str(epoch).encode(),
            check,
        ]
        return hmac.digest(
            self.key, b"".join(len(p).to_bytes(4, "big") + p for p in parts), "sha256"
        )


def describe(token: bytes, field: str) -> str:
    """How a damaged row is named to the operator: the field and a token prefix (a pseudonym)."""
    return f"{field} of token {token[:6].hex()}…"
