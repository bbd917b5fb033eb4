"""The household registry connector (公安户籍): the population register itself."""

from __future__ import annotations

import logging

import grpc
from sqlalchemy.exc import SQLAlchemyError

from hedui.connectors.store import Person, RegisterStore
from hedui.core import rpc
from hedui.core.clock import DEPLOYMENT, Clock
from hedui.core.errors import InvalidResidentId
from hedui.core.resident_id import parse as parse_id
from hedui.proto.v1 import connector_pb2, connector_pb2_grpc

log = logging.getLogger("hedui.connectors.registry")

_RELATIONS = {
    "head": connector_pb2.HEAD,
    "spouse": connector_pb2.SPOUSE,
    "child": connector_pb2.CHILD,
    "parent": connector_pb2.PARENT,
    "grandchild": connector_pb2.GRANDCHILD,
    "sibling": connector_pb2.SIBLING,
    "other": connector_pb2.OTHER,
}


class RegistryServicer(connector_pb2_grpc.RegistryServiceServicer):
    def __init__(self, store: RegisterStore, clock: Clock = DEPLOYMENT) -> None:
        self._store = store
        self._clock = clock

    def GetHousehold(
        self, request: connector_pb2.HouseholdRequest, context: grpc.ServicerContext
    ) -> connector_pb2.Household:
        try:
            resident = parse_id(request.id_number, today=self._clock.today())
        except InvalidResidentId as e:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                str(e),
                rpc.bad_request("id_number", str(e)),
            )
        try:
            members = self._store.household_of(resident.value)
        except SQLAlchemyError as e:
            log.error("registry database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "the household register is not available")
        if not members:
            rpc.abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                "the ID number is not in the household register",
            )
        return _household(members)

    def GetHouseholds(
        self, request: connector_pb2.HouseholdsRequest, context: grpc.ServicerContext
    ) -> connector_pb2.HouseholdsResponse:
        if not 1 <= len(request.id_numbers) <= 1024:
            rpc.abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "1 to 1024 ID numbers per call",
                rpc.bad_request("id_numbers", "1 to 1024 ID numbers"),
            )
        # one number that does not parse is one household not found, never the whole call
        today = self._clock.today()
        ids: list[str | None] = []
        for raw in request.id_numbers:
            try:
                ids.append(parse_id(raw, today=today).value)
            except InvalidResidentId:
                ids.append(None)
        try:
            found = iter(self._store.households_of([i for i in ids if i is not None]))
        except SQLAlchemyError as e:
            log.error("registry database error: %s", type(e).__name__)
            rpc.abort(context, grpc.StatusCode.INTERNAL, "the household register is not available")
        return connector_pb2.HouseholdsResponse(
            households=[_household(next(found) if i is not None else []) for i in ids]
        )


def _household(members: list[Person]) -> connector_pb2.Household:
    return connector_pb2.Household(
        members=[
            connector_pb2.Member(
                id_number=m.id_number, relation=_RELATIONS[m.relation], birth_date=m.birth_date
            )
            for m in members
        ]
    )
