"""The evidence the service gives the key custodian that a query's request entries are logged."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hedui.audit.errors import AuditError
from hedui.audit.log import AuditLog
from hedui.core.custody import LogEvidence, LoggedRequest


def log_evidence(log: AuditLog, leaves: Sequence[int]) -> Callable[[int], LogEvidence]:
    """The evidence, for a given witness size, that these entries are in the log: inclusion in
    the latest checkpoint, and its consistency with that size."""

    def build(witness_size: int) -> LogEvidence:
        store = log.store
        latest = store.latest_checkpoint()
        if latest is None:
            raise AuditError("the audit log has no checkpoint")
        size, note = latest
        entries = dict(store.entries(min(leaves), max(leaves) + 1))
        proofs = store.inclusion_proofs(list(leaves), size)
        consistency: list[bytes] = []
        if 0 < witness_size != size:
            consistency = store.consistency_proof(*sorted((witness_size, size)))
        return LogEvidence(
            note,
            tuple(
                LoggedRequest(i, entries[i], tuple(p)) for i, p in zip(leaves, proofs, strict=True)
            ),
            witness_size,
            tuple(consistency),
        )

    return build
