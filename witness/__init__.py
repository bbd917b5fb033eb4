"""A transparency-log witness (c2sp.org/tlog-witness, ``cosignature/v1``): ``hedui serve witness``.

It cosigns a log's checkpoints only when each extends the last one it cosigned, so that the
parties who require its cosignature (the key custodian, auditors) all see one history of the
audit log, never a fork shown to one of them alone (issue #23). It is not the service: run by
the registry or by an operator of its own, with a key of its own.
"""
