"""The evidence the service gives the key custodian that a query's request entries are logged."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hedui.audit.errors import AuditError
from hedui.audit.log import AuditLog
from hedui.core.custody import LogEvidence, LoggedRequest


def log_evidence(log: AuditLog, leaves: Sequence[int]) -> Callable[[int], LogEvidence]:
    """The evidence, for the size of a checkpoint the custodian witnessed, that these entries
    are in the log. When they are inside that checkpoint: their inclusion in it, and nothing
    more (the custodian remembers the checkpoints it witnessed, so requests proven there do not
    race the ones that move its witness on). Otherwise: their inclusion in the latest
    checkpoint, and its consistency with that size (the custodian then witnesses it)."""

    def build(witness_size: int) -> LogEvidence:
        store = log.store
        note = store.checkpoint_at(witness_size) if max(leaves) < witness_size else None
        if note is not None:
            size = witness_size
        else:
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
