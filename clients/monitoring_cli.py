"""``hedui monitor enrol`` and ``hedui alerts …``: 主动发现 for caseworkers, over gRPC with the
intake system's certificate."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.json_format import MessageToDict

from hedui.clients.args import date_arg
from hedui.clients.errors import ClientError
from hedui.clients.intake import (
    IntakeProfile,
    decision_text,
    describe_rpc_error,
    format_fen,
    open_service_channel,
)
from hedui.proto.v1 import connector_pb2, monitoring_pb2, verification_pb2

if TYPE_CHECKING:  # grpc, the connectors' and the key store's code are imported where used
    from hedui.core.workdir import Workdir
    from hedui.proto.v1 import monitoring_pb2_grpc

T = TypeVar("T")
WORKDIR_HELP = "the deployment's folder (as given to `hedui up`)"
KIND_ZH = {
    "death": "家庭成员死亡",
    "unemployment": "家庭成员登记失业",
    "medical_self_pay": "医疗自付费用超过年度标准",
    "disability": "家庭成员新认定残疾",
    "vehicle": "新登记机动车",
    "commercial_property": "新登记商业用房",
    "business": "新登记经营主体",
}
LEVELS = ("in time", "OVERDUE", "ESCALATED")


@contextmanager
def _follow_up(workdir: Path) -> Iterator[monitoring_pb2_grpc.FollowUpServiceStub]:
    from hedui.core.workdir import Workdir
    from hedui.proto.v1 import monitoring_pb2_grpc

    profile = IntakeProfile.load(Workdir(workdir).intake_profile)
    channel = open_service_channel(profile)
    try:
        yield monitoring_pb2_grpc.FollowUpServiceStub(channel)
    finally:
        channel.close()


def _call(what: str, fn: Callable[[], T]) -> T:
    import grpc

    try:
        return fn()
    except grpc.RpcError as e:
        raise ClientError(f"{what}: {describe_rpc_error(e)}") from None


def alert_sentence(a: monitoring_pb2.AlertView) -> str:
    """What happened and what the re-check found, for a person."""
    event = KIND_ZH.get(a.kind, a.kind)
    if a.decision_after == "ELIGIBLE":
        now = "still" if a.decision_before == "ELIGIBLE" else "now"
        found = f"{now} ELIGIBLE for {a.program}, benefit {format_fen(a.benefit_fen)} yuan/month"
    elif a.decision_before != a.decision_after:
        found = f"{a.program}: {a.decision_before} → {decision_text(a.decision_after)}"
    else:
        found = f"{a.program} unchanged ({decision_text(a.decision_after)})"
    check = f"; check {a.suggest}" if a.suggest and a.suggest != a.program else ""
    return f"{event} ({a.kind}, {a.event_on}): household {found}{check}"


def _row(a: monitoring_pb2.AlertView) -> str:
    return (
        f"{a.alert_id}  {a.district or '-':6}  {a.masked_applicant:20}  {a.kind:19} "
        f"{a.state:8}  due {a.due_on}  {LEVELS[min(a.level, 2)]}"
    )


def _print_alerts(alerts: list[monitoring_pb2.AlertView], as_json: bool) -> None:
    if as_json:
        for a in alerts:
            print(
                json.dumps(MessageToDict(a, preserving_proto_field_name=True), ensure_ascii=False)
            )
        return
    if not alerts:
        print("no alerts")
        return
    print(f"{'alert':32}  {'distr.':6}  {'household':20}  {'event':19} {'state':8}  deadline")
    for a in alerts:
        print(_row(a))
    print(f"{len(alerts)} alert(s); `hedui alerts show ID` for one")


def _show(a: monitoring_pb2.AlertView, as_json: bool) -> None:
    if as_json:
        print(json.dumps(MessageToDict(a, preserving_proto_field_name=True), ensure_ascii=False))
        return
    print(f"alert {a.alert_id}  ({LEVELS[min(a.level, 2)]})")
    print(f"  {alert_sentence(a)}")
    print(f"  household: {a.masked_applicant}, district {a.district or 'unknown'}")
    print(f"  raised {a.raised_on}, due {a.due_on}, escalated after {a.escalate_on}")
    print(f"  state: {a.state}" + (f" by {a.accepted_by}" if a.accepted_by else ""))
    if a.closed_on:
        print(
            f"  closed {a.closed_on} by {a.closed_by}: {a.outcome}"
            + (f" — {a.note}" if a.note else "")
        )
    print(f"  re-check: request {a.recheck_request_id} (`hedui audit search` finds its entries)")


def cmd_enrol(args: argparse.Namespace) -> int:
    import grpc

    from hedui.clients.recheck import read_roster

    if not args.roster.is_file():
        raise ClientError(f"the roster {args.roster} is not a file; one ID number per line")
    entries = read_roster(args.roster)
    # the same roster, programme, end date and campaign give the same request ids: a rerun
    # resumes
    batch = hashlib.sha256(
        args.roster.read_bytes() + f"\0{args.program}\0{args.until}\0{args.campaign}".encode()
    ).hexdigest()[:12]
    done = failed = 0
    with _follow_up(args.workdir) as stub:
        for line, id_number in entries:
            request = monitoring_pb2.EnrolRequest(
                request_id=f"enrol-{batch}-{line}",
                id_number=id_number,
                program=args.program,
                region=args.region or "",
                consent=verification_pb2.Consent(campaign=args.campaign),
                until=args.until.isoformat(),
                caseworker_id=args.caseworker or "",
            )
            try:
                e = stub.Enrol(request, timeout=120)
            except grpc.RpcError as err:
                failed += 1
                print(f"line {line}: not enrolled: {describe_rpc_error(err)}", file=sys.stderr)
                continue
            done += 1
            print(
                f"line {line}: {e.masked_applicant}  district {e.district or '-'}  watch "
                f"{e.watch_id[:12]}  until {e.until}  baseline {decision_text(e.baseline.decision)}"
            )
    print(f"{done} household(s) under monitoring for {args.program}, {failed} not enrolled")
    return 0 if not failed else 1


def cmd_list(args: argparse.Namespace) -> int:
    with _follow_up(args.workdir) as stub:
        r = _call(
            "listing alerts",
            lambda: stub.ListAlerts(
                monitoring_pb2.ListAlertsRequest(
                    district=args.district or "", state=args.state or ""
                ),
                timeout=30,
            ),
        )
    _print_alerts(list(r.alerts), args.json)
    return 0


def cmd_overdue(args: argparse.Namespace) -> int:
    with _follow_up(args.workdir) as stub:
        r = _call(
            "listing overdue alerts",
            lambda: stub.ListAlerts(
                monitoring_pb2.ListAlertsRequest(district=args.district or "", overdue=True),
                timeout=30,
            ),
        )
    _print_alerts(list(r.alerts), args.json)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _follow_up(args.workdir) as stub:
        a = _call(
            f"alert {args.alert_id}",
            lambda: stub.GetAlert(monitoring_pb2.AlertRequest(alert_id=args.alert_id), timeout=30),
        )
    _show(a, args.json)
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    with _follow_up(args.workdir) as stub:
        a = _call(
            f"accepting alert {args.alert_id}",
            lambda: stub.AcceptAlert(
                monitoring_pb2.AlertRequest(
                    alert_id=args.alert_id, caseworker_id=args.caseworker or ""
                ),
                timeout=30,
            ),
        )
    _show(a, args.json)
    return 0


def cmd_close(args: argparse.Namespace) -> int:
    with _follow_up(args.workdir) as stub:
        a = _call(
            f"closing alert {args.alert_id}",
            lambda: stub.CloseAlert(
                monitoring_pb2.CloseAlertRequest(
                    alert_id=args.alert_id,
                    outcome=args.outcome,
                    note=args.note or "",
                    caseworker_id=args.caseworker or "",
                ),
                timeout=30,
            ),
        )
    _show(a, args.json)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    with _follow_up(args.workdir) as stub:
        r = _call(
            "the monthly report",
            lambda: stub.MonthlyReport(
                monitoring_pb2.MonthlyReportRequest(month=args.month), timeout=30
            ),
        )
    if args.json:
        out: dict[str, Any] = MessageToDict(
            r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(f"主动发现 alerts, {r.month}, by district")
    print(f"{'district':8} {'raised':>6} {'in time':>8} {'late':>5} {'overdue':>8}  outcomes")
    for d in r.districts:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(d.outcomes.items())) or "-"
        print(
            f"{d.district or '-':8} {d.raised:>6} {d.closed_in_time:>8} {d.closed_late:>5} "
            f"{d.overdue:>8}  {outcomes}"
        )
    total = sum(d.raised for d in r.districts)
    print(f"{len(r.districts)} district(s), {total} alert(s) raised")
    return 0


def _common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--workdir", type=Path, required=True, help=WORKDIR_HELP)
    if json_flag:
        p.add_argument(
            "--json", action="store_true", help="JSON instead of a table (default: a table)"
        )


def add_parser(sub: Any) -> None:
    mon = sub.add_parser(
        "monitor", help="主动发现: put households under monitoring"
    ).add_subparsers(dest="monitor_command", required=True)
    p = mon.add_parser(
        "enrol",
        help="monitor the households of a roster until a date, under a registered monitoring "
        "campaign",
    )
    _common(p, json_flag=False)
    p.add_argument("--roster", type=Path, required=True, help="one ID number per line")
    p.add_argument(
        "--program",
        default="dibao",
        help="the programme they are enrolled in (default: %(default)s)",
    )
    p.add_argument(
        "--until", type=date_arg, required=True, help="the last day of monitoring, YYYY-MM-DD"
    )
    p.add_argument("--region", help="the policy region (default: the service's)")
    p.add_argument(
        "--campaign",
        required=True,
        metavar="NUMBER",
        help="the document number (文号) of the monitoring (主动发现) campaign the bureau "
        "registered with the household registry; only households on its roster are enrolled, "
        "and never past its end",
    )
    p.add_argument("--caseworker", help="who enrols, as logged (default: none)")
    p.set_defaults(func=cmd_enrol)

    alerts = sub.add_parser(
        "alerts", help="主动发现 alerts: list, follow up, report"
    ).add_subparsers(dest="alerts_command", required=True)
    p = alerts.add_parser("list", help="alerts, by due date")
    _common(p)
    p.add_argument("--district", help="one district's (default: every district)")
    p.add_argument(
        "--state", choices=("open", "accepted", "closed"), help="only in this state (default: all)"
    )
    p.set_defaults(func=cmd_list)
    p = alerts.add_parser(
        "overdue", help="alerts past their deadline, not closed (escalated ones too)"
    )
    _common(p)
    p.add_argument("--district", help="one district's (default: every district)")
    p.set_defaults(func=cmd_overdue)
    p = alerts.add_parser("show", help="one alert: the event, the re-check, the follow-up")
    _common(p)
    p.add_argument("alert_id", help="the alert's id, as `hedui alerts list` shows it")
    p.set_defaults(func=cmd_show)
    p = alerts.add_parser("accept", help="take an alert for a visit")
    _common(p)
    p.add_argument("alert_id", help="the alert's id, as `hedui alerts list` shows it")
    p.add_argument("--caseworker", help="who takes it, as logged (default: none)")
    p.set_defaults(func=cmd_accept)
    p = alerts.add_parser("close", help="close an alert with its outcome")
    _common(p)
    p.add_argument("alert_id", help="the alert's id, as `hedui alerts list` shows it")
    p.add_argument(
        "--outcome",
        required=True,
        choices=("visited", "applied", "enrolled", "not_needed"),
        help="what the follow-up found: visited, applied, enrolled or not_needed",
    )
    p.add_argument(
        "--note",
        default=None,
        help="what was found, at most 500 characters, no ID number (default: none)",
    )
    p.add_argument("--caseworker", help="who closes it, as logged (default: none)")
    p.set_defaults(func=cmd_close)
    p = alerts.add_parser(
        "report", help="the month's alerts per district (raised, in time, overdue)"
    )
    _common(p)
    p.add_argument("--month", required=True, help="YYYY-MM, e.g. 2026-11")
    p.set_defaults(func=cmd_report)


def demo_discovery(w: Workdir, id_number: str, tmp: Path, today: dt.date) -> str:
    """`hedui demo`'s 主动发现 step: the bureau registers a monitoring campaign for one household,
    the intake enrols it under that campaign, the civil affairs connector reports a death in it
    over its own certificate, and the demo waits for the alert that the re-check raises. What a
    person reads about it."""
    from hedui.clients import campaign_cli
    from hedui.clients.consent import form_digest
    from hedui.connectors.events import PersonEvent, push_events
    from hedui.connectors.tokenizer import AuthorityTokenizer
    from hedui.core.keystore import REGISTRY_ID

    doc = tmp / "monitoring-authorisation.pdf"
    doc.write_bytes(b"standing authorisation: dynamic monitoring of low-income households")
    number = f"民政监测〔{today.year}〕{secrets.randbelow(9000) + 1000}号"
    campaign_cli.register(
        campaign_cli.bureau_profile(w.root, None),
        connector_pb2.Campaign(
            number=number,
            kind=connector_pb2.MONITORING,
            program="dibao",
            title="低收入人口动态监测（演示）",
            issued_on=today.isoformat(),
            valid_until=(today + dt.timedelta(days=365)).isoformat(),
            document_sha256=form_digest(doc, "campaign document", "--document"),
        ),
        [id_number],
    )
    with _follow_up(w.root) as stub:
        e = _call(
            "enrolling the demo household",
            lambda: stub.Enrol(
                monitoring_pb2.EnrolRequest(
                    request_id="demo-enrol",
                    id_number=id_number,
                    program="dibao",
                    consent=verification_pb2.Consent(campaign=number),
                    until=(today + dt.timedelta(days=180)).isoformat(),
                ),
                timeout=120,
            ),
        )
        civil = "civil"
        tokenizer = AuthorityTokenizer(
            w.listening_file(REGISTRY_ID).read_text().strip(),
            w.tls(civil),
            civil,
            w.keys(REGISTRY_ID).token_epoch(),
        )
        try:
            push_events(
                [PersonEvent(id_number, "death", today - dt.timedelta(days=1), 0)],
                tokenizer,
                IntakeProfile.load(w.intake_profile).address,
                w.tls(civil),
            )
        finally:
            tokenizer.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = _call(
                "listing alerts",
                lambda: stub.ListAlerts(monitoring_pb2.ListAlertsRequest(), timeout=30),
            )
            if found.alerts:
                a = found.alerts[0]
                return (
                    f"主动发现: household {e.masked_applicant} enrolled (baseline "
                    f"{decision_text(e.baseline.decision)}); civil affairs reported a death → "
                    f"re-check {a.recheck_request_id} → alert {a.alert_id} for district "
                    f"{a.district}, due {a.due_on}:\n  {alert_sentence(a)}"
                )
            time.sleep(0.5)
    raise ClientError("the demo's event raised no alert within 120 s; see the service's log")
