"""The evidence the service gives the key custodian that a query's request entries are logged.

The custodian takes only checkpoints cosigned by the log's witnesses (issue #23). When the log
has witnesses, the evidence is proven in a cosigned checkpoint: the one the custodian witnessed
if its note carries the cosignatures, else the latest, cosigned now if it was stored without
them. When no witness cosigns it, the request stops here, before the custodian is asked:
:class:`WitnessUnavailable` (UNAVAILABLE, "retry later") names the witness and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hedui.audit import errors as audit_errors
from hedui.audit.errors import AuditError
from hedui.audit.log import AuditLog
from hedui.core.custody import LogEvidence, LoggedRequest
from hedui.server.errors import SourceUnavailable


class WitnessUnavailable(SourceUnavailable):
    """No checkpoint cosigned by the log's witnesses covers the request entries: the key
    custodian would refuse, so it is not asked; nothing was decided."""


def log_evidence(log: AuditLog, leaves: Sequence[int]) -> Callable[[int], LogEvidence]:
    """The evidence, for the size of a checkpoint the custodian witnessed, that these entries
    are in the log. When they are inside that checkpoint: their inclusion in it, and nothing
    more (the custodian remembers the checkpoints it witnessed, so requests proven there do not
    race the ones that move its witness on). Otherwise: their inclusion in the latest
    checkpoint, and its consistency with that size (the custodian then witnesses it). With
    witnesses, both are the notes they cosigned (see the module's docstring)."""

    def build(witness_size: int) -> LogEvidence:
        store = log.store
        note = log.cosigned_note(witness_size) if max(leaves) < witness_size else None
        if note is not None:
            size = witness_size
        elif log.witnesses is None:
            latest = store.latest_checkpoint()
            if latest is None:
                raise AuditError("the audit log has no checkpoint")
            size, note = latest
        else:
            try:
                size, note = log.witnessed_latest()
            except audit_errors.WitnessUnavailable as e:
                raise WitnessUnavailable(
                    f"the audit log's checkpoint is not cosigned by its witness, and the key "
                    f"custodian decrypts only under a cosigned one: {e}"
                ) from None
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
