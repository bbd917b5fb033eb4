"""``hedui report``: the 核对报告 of one verification, as the intake system that made it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hedui.clients.args import check_writable_dir, check_writable_file, unwritable
from hedui.clients.intake import IntakeClient, IntakeProfile
from hedui.core.workdir import Workdir
from hedui.proto.v1 import verification_pb2

FORMATS = {"html": verification_pb2.HTML, "pdf": verification_pb2.PDF}


def cmd_report(args: argparse.Namespace) -> int:
    # checked before the service is asked; without --out, the name the service suggests, here
    if args.out:
        check_writable_file(args.out, "--out")
    else:
        check_writable_dir(Path.cwd(), "the current folder")
    client = IntakeClient(IntakeProfile.load(args.profile or Workdir(args.workdir).intake_profile))
    try:
        report = client.report(
            verification_pb2.ReportRequest(
                request_id=args.request_id, format=FORMATS[args.format], lang=args.lang
            )
        )
    finally:
        client.close()
    out: Path = args.out or Path(Path(report.filename).name or "report.html")
    try:
        out.write_bytes(report.document)
    except OSError as e:
        raise unwritable(out, "--out", e) from None
    print(f"{out}", file=sys.stdout)
    print(
        f"the report of request {args.request_id} ({len(report.document):,} bytes, "
        f"{report.media_type}); its audit receipt is entry {report.verdict.audit.leaf_index}: "
        f"check it with `hedui audit prove {report.verdict.audit.leaf_index}`",
        file=sys.stderr,
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "report",
        help="the printable 核对报告 of a verification this intake made (HTML or PDF, A4)",
    )
    p.add_argument("--request-id", required=True, help="the request id of the verification")
    p.add_argument(
        "--workdir",
        type=Path,
        required=True,
        help="the deployment's folder (its intake profile is used)",
    )
    p.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="html",
        help="html: self-contained, prints from any browser; pdf: rendered by the service "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--lang", choices=["zh", "en"], default="zh", help="language (default: %(default)s)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="where to write it (default: report-REQUEST_ID.html or .pdf here)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="the intake profile to call with (default: WORKDIR/intake.toml)",
    )
    p.set_defaults(func=cmd_report)
