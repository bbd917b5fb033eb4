"""The AuditService: the log as auditors see it, over gRPC, auditor certificates only."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import grpc

from hedui.audit.checkpoint import vkey
from hedui.audit.errors import WitnessUnavailable
from hedui.audit.log import AuditLog
from hedui.audit.store import CALLER_CHARS
from hedui.core import rpc
from hedui.core.errors import InvalidResidentId
from hedui.core.resident_id import parse as parse_id
from hedui.core.tokens import TokenKey
from hedui.proto.v1 import audit_pb2, audit_pb2_grpc
from hedui.server.verdicts import receipt_pb

log = logging.getLogger("hedui.server")

MAX_PAGE = 1000


MAX_CALLER = CALLER_CHARS  # as indexed for search
MAX_INDEX = 2**63 - 1  # a leaf index or tree size the database can hold


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, log: AuditLog, audit_key: TokenKey, now: Callable[[], dt.datetime]) -> None:
        self._log = log
        self._store = log.store
        self._audit_key = audit_key
        self._now = now

    def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> audit_pb2.CheckpointResponse:
        if request.tree_size > MAX_INDEX:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"tree_size is at most {MAX_INDEX}",
                rpc.bad_request("tree_size", f"0 (the latest) to {MAX_INDEX}"),
            )
        if request.tree_size:
            note = self._log.checkpoint(request.tree_size)
            if note is None:
                rpc.abort(
                    context,
                    grpc.StatusCode.NOT_FOUND,
                    f"the log signed no checkpoint at size {request.tree_size}",
                )
        else:
            # the latest, with its witnesses' cosignatures (asked for now if it was stored
            # without them); when they cannot be had, as signed: the auditor says it is not
            # cosigned, and why is in the service's log
            try:
                _, note = self._log.witnessed_latest()
            except WitnessUnavailable as e:
                log.warning("GetCheckpoint: the latest checkpoint is not cosigned: %s", e)
                latest = self._store.latest_checkpoint()
                note = latest[1] if latest else self._log.sign(self._store.size())
        return audit_pb2.CheckpointResponse(
            checkpoint=note, verifier_key=vkey(self._log.key_name, self._log.public_key)
        )

    def GetEntries(
        self, request: audit_pb2.GetEntriesRequest, context: grpc.ServicerContext
    ) -> audit_pb2.GetEntriesResponse:
        """The stored entries in [start, end), at most 1000: as stored, so that an auditor also
        sees rows beyond the signed tree."""
        if request.start > MAX_INDEX or request.end > MAX_INDEX:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"start and end are at most {MAX_INDEX}",
                rpc.bad_request("end", f"an index from 0 to {MAX_INDEX}"),
            )
        if request.start >= request.end:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "start must be below end",
                rpc.bad_request("start", "[start, end) must not be empty"),
            )
        end = min(request.end, request.start + MAX_PAGE)
        return audit_pb2.GetEntriesResponse(
            entries=[
                audit_pb2.LogEntry(index=i, entry=e)
                for i, e in self._store.entries(request.start, end)
            ]
        )

    def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ProofResponse:
        size = self._store.size()
        if not 0 <= request.index < request.tree_size <= size:
            rpc.abort(
                context,
                grpc.StatusCode.OUT_OF_RANGE,
                "no such leaf in a tree of that size",
                rpc.bad_request("index", f"need index < tree_size <= {size}"),
            )
        return audit_pb2.ProofResponse(
            hashes=self._store.inclusion_proof(request.index, request.tree_size)
        )

    def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ProofResponse:
        size = self._store.size()
        if not 0 < request.first <= request.second <= size:
            rpc.abort(
                context,
                grpc.StatusCode.OUT_OF_RANGE,
                "no consistency proof between those sizes",
                rpc.bad_request("first", f"need 0 < first <= second <= {size}"),
            )
        return audit_pb2.ProofResponse(
            hashes=self._store.consistency_proof(request.first, request.second)
        )

    def Search(
        self, request: audit_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> audit_pb2.SearchResponse:
        by = request.WhichOneof("by")
        if by is None:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "say what to search by",
                rpc.bad_request("by", "one of applicant_id_number, caller, time_range_only"),
            )
        token = None
        if by == "applicant_id_number":
            try:
                token = self._audit_key.token(
                    parse_id(request.applicant_id_number, today=self._now().date())
                )
            except InvalidResidentId as e:
                rpc.abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    str(e),
                    rpc.bad_request("applicant_id_number", str(e)),
                )
        caller = request.caller if by == "caller" else None
        if caller is not None and not 0 < len(caller) <= MAX_CALLER:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"caller is 1 to {MAX_CALLER} characters",
                rpc.bad_request(
                    "caller", f"a certificate name (or name/caseworker), 1 to {MAX_CALLER}"
                ),
            )
        limit = min(request.limit or MAX_PAGE, MAX_PAGE)
        found = self._store.search(
            applicant_token=token,
            caller=caller,
            since_ms=request.since_unix_ms,
            until_ms=request.until_unix_ms,
            limit=limit,
        )
        who = rpc.caller(context)
        entry = audit_pb2.AuditEntry(
            time_unix_ms=int(self._now().timestamp() * 1000),
            caller=who.name,
            caller_role=who.role,
            search=audit_pb2.AuditorSearch(
                by={"applicant_id_number": "applicant", "caller": "caller"}.get(by, "time"),
                applicant_audit_token=token or b"",
                caller=caller or "",
                since_unix_ms=request.since_unix_ms,
                until_unix_ms=request.until_unix_ms,
                results=len(found),
            ),
        )
        (receipt,) = self._log.append([entry])
        return audit_pb2.SearchResponse(
            entries=[audit_pb2.LogEntry(index=i, entry=e) for i, e in found],
            search_receipt=receipt_pb(receipt),
        )
