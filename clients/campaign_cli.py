"""``hedui campaign``: the civil-affairs bureau registers its campaigns with the household registry.

A 复核 re-verification or a 主动发现 monitoring enrolment checks households without their members'
signatures, under a dated document the bureau signed. The bureau (certificate role ``bureau``)
registers that document with the registry, with the roster of households it covers; an intake
system then names the campaign (``hedui recheck --campaign``, ``hedui monitor enrol --campaign``)
and the registry answers only households on its roster, while it is in force.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hedui.clients.args import date_arg
from hedui.clients.consent import MAX_FORM_TEXT, form_digest
from hedui.clients.errors import ClientError
from hedui.clients.intake import (
    IntakeProfile,
    describe_rpc_error,
    open_service_channel,
    read_profile,
)
from hedui.proto.v1 import connector_pb2

if TYPE_CHECKING:
    import grpc

BUREAU = "bureau"  # the bureau of a `hedui up` deployment
PART = 1024
KINDS = {"recheck": connector_pb2.RECHECK, "monitoring": connector_pb2.MONITORING}
_KIND_NAMES = {v: k for k, v in KINDS.items()}
PROFILE_HELP = (
    'a bureau profile (TOML: address of the registry, server_name = "registry", cert, key, '
    "ca), instead of --workdir"
)


def bureau_profile(workdir: Path | None, profile: Path | None) -> IntakeProfile:
    """How the bureau reaches the registry: a `hedui up` deployment's, or a profile file."""
    if profile is not None:
        return IntakeProfile.from_doc(
            profile,
            read_profile(profile, f"{profile} does not exist; write the bureau's profile first"),
        )
    if workdir is None:
        raise ClientError("give --workdir DIR (a `hedui up` deployment) or --profile FILE")
    from hedui.core.keystore import REGISTRY_ID
    from hedui.core.workdir import Workdir

    w = Workdir(workdir)
    listening = w.listening_file(REGISTRY_ID)
    if not listening.exists():
        raise ClientError(f"the registry of {workdir} is not running; start it with `hedui up`")
    if not w.keys(BUREAU).tls_paths(BUREAU)[0].exists():
        raise ClientError(
            f"{workdir} has no bureau certificate; run `hedui up --workdir {workdir}` again"
        )
    return IntakeProfile(listening.read_text().strip(), REGISTRY_ID, w.tls(BUREAU))


def _parts(
    header: connector_pb2.Campaign, id_numbers: Sequence[str]
) -> Iterator[connector_pb2.CampaignPart]:
    yield connector_pb2.CampaignPart(header=header)
    for i in range(0, len(id_numbers), PART):
        yield connector_pb2.CampaignPart(
            roster=connector_pb2.RosterPart(id_numbers=list(id_numbers[i : i + PART]))
        )


def register(
    profile: IntakeProfile,
    header: connector_pb2.Campaign,
    id_numbers: Sequence[str],
    timeout: float = 600.0,
) -> connector_pb2.CampaignReceipt:
    """Register a campaign with its roster; ClientError (the registry's words) if refused."""
    import grpc

    from hedui.proto.v1 import connector_pb2_grpc

    channel = open_service_channel(profile)
    try:
        stub = connector_pb2_grpc.CampaignServiceStub(channel)
        receipt: connector_pb2.CampaignReceipt = stub.RegisterCampaign(
            _parts(header, id_numbers), timeout=timeout
        )
        return receipt
    except grpc.RpcError as e:
        raise ClientError(f"campaign {header.number} not registered: {_why(e)}") from None
    finally:
        channel.close()


def campaigns(profile: IntakeProfile, number: str = "") -> list[connector_pb2.Campaign]:
    import grpc

    from hedui.proto.v1 import connector_pb2_grpc

    channel = open_service_channel(profile)
    try:
        stub = connector_pb2_grpc.CampaignServiceStub(channel)
        reply = stub.ListCampaigns(connector_pb2.ListCampaignsRequest(number=number), timeout=60)
        return list(reply.campaigns)
    except grpc.RpcError as e:
        raise ClientError(f"cannot list campaigns: {_why(e)}") from None
    finally:
        channel.close()


_OPTIONS = {
    "number": "--number",
    "kind": "--kind",
    "program": "--program",
    "title": "--title",
    "issued_on": "--issued-on",
    "valid_until": "--valid-until",
    "document_sha256": "--document",
    "roster": "--roster",
}


def _why(e: grpc.RpcError) -> str:
    return describe_rpc_error(e, fields=lambda f: _OPTIONS.get(f, f), peer="the household registry")


def cmd_register(args: argparse.Namespace) -> int:
    from hedui.clients.recheck import read_roster

    if not args.roster.is_file():
        raise ClientError(f"the roster {args.roster} is not a file; one ID number per line")
    header = connector_pb2.Campaign(
        number=args.number,
        kind=KINDS[args.kind],
        program=args.program,
        title=args.title or "",
        issued_on=args.issued_on.isoformat(),
        valid_until=args.valid_until.isoformat(),
        document_sha256=form_digest(args.document, "campaign document", "--document"),
    )
    ids = [i for _, i in read_roster(args.roster)]
    receipt = register(bureau_profile(args.workdir, args.profile), header, ids)
    c = receipt.campaign
    print(
        f"campaign {c.number} registered: {c.households} household(s), {_KIND_NAMES[c.kind]}, "
        f"{c.program}, in force {c.issued_on} to {c.valid_until}"
    )
    if receipt.unknown:
        shown = ", ".join(str(p) for p in receipt.unknown_positions[:20])
        more = " …" if receipt.unknown > 20 else ""
        print(
            f"  {receipt.unknown} roster line(s) not in the register (entries {shown}{more}); "
            "those households are not covered"
        )
    if receipt.duplicates:
        print(f"  {receipt.duplicates} line(s) named a household already on the roster")
    return 0


def as_dict(c: connector_pb2.Campaign) -> dict[str, object]:
    return {
        "number": c.number,
        "kind": _KIND_NAMES.get(c.kind, "?"),
        "program": c.program,
        "title": c.title,
        "issued_on": c.issued_on,
        "valid_until": c.valid_until,
        "document_sha256": c.document_sha256.hex(),
        "households": c.households,
        "registered_by": c.registered_by,
        "registered_at": dt.datetime.fromtimestamp(c.registered_unix_ms / 1000, dt.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
    }


def cmd_list(args: argparse.Namespace) -> int:
    found = campaigns(bureau_profile(args.workdir, args.profile), args.number or "")
    if args.json:
        print(json.dumps([as_dict(c) for c in found], ensure_ascii=False, indent=2))
        return 0
    if not found:
        print("no campaign is registered")
        return 0
    print(f"{'number':<24} {'kind':<10} {'program':<8} {'in force':<23} households  title")
    for c in found:
        print(
            f"{c.number:<24} {_KIND_NAMES.get(c.kind, '?'):<10} {c.program:<8} "
            f"{c.issued_on} – {c.valid_until} {c.households:>10}  {c.title}"
        )
    return 0


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workdir", type=Path, help="a `hedui up` deployment (its bureau) (default: none)"
    )
    p.add_argument("--profile", type=Path, metavar="FILE", help=PROFILE_HELP + " (default: none)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    camp = sub.add_parser(
        "campaign",
        help="the bureau: register re-verification (复核) and monitoring (主动发现) campaigns",
    ).add_subparsers(dest="campaign_command", required=True)
    p = camp.add_parser(
        "register", help="register a campaign's document and roster with the household registry"
    )
    _where(p)
    p.add_argument(
        "--number", required=True, help="the document number (文号), e.g. 杭民〔2026〕12号"
    )
    p.add_argument(
        "--kind",
        choices=sorted(KINDS),
        required=True,
        help="recheck (复核) or monitoring (主动发现)",
    )
    p.add_argument("--program", default="dibao", help="the programme (default: %(default)s)")
    p.add_argument("--title", help="a title shown to auditors, no ID numbers (default: none)")
    p.add_argument(
        "--issued-on", type=date_arg, required=True, help="the document's date, YYYY-MM-DD"
    )
    p.add_argument(
        "--valid-until",
        type=date_arg,
        required=True,
        help="the last day it is in force, YYYY-MM-DD (at most 3 years after --issued-on)",
    )
    p.add_argument(
        "--document",
        type=Path,
        required=True,
        metavar="FILE",
        help=f"the signed document, a regular file of at most {MAX_FORM_TEXT} (its SHA-256 is "
        "registered and logged with every check under it)",
    )
    p.add_argument(
        "--roster", type=Path, required=True, help="the households: one member's ID number per line"
    )
    p.set_defaults(func=cmd_register)
    p = camp.add_parser("list", help="the campaigns registered with the household registry")
    _where(p)
    p.add_argument("--number", help="only this document number (default: every campaign)")
    p.add_argument("--json", action="store_true", help="as JSON (default: a table)")
    p.set_defaults(func=cmd_list)
