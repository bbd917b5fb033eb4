"""``hedui report``: the 核对报告 of one verification, as the intake system that made it."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

from hedui.clients.args import check_writable_file, unwritable
from hedui.clients.errors import ClientError
from hedui.clients.intake import INTAKE_STEP, IntakeClient, IntakeProfile, intake_profile_path
from hedui.proto.v1 import verification_pb2

FORMATS = {"html": verification_pb2.HTML, "pdf": verification_pb2.PDF}

SAFE_CHARACTERS = "A-Z a-z 0-9 _ . -"
"""The characters a default report name keeps from the request id; any other becomes ``_``."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_ID_IN_NAME = 100


def report_name(request_id: str, fmt: str) -> str:
    """The default file name of a report: ``report-<request id>.html|pdf``, made here, never
    the service's suggestion.

    Characters outside ``SAFE_CHARACTERS`` become ``_`` and the id is cut at 100 characters;
    when anything was replaced or cut, 8 hex digits of the id's SHA-256 are added, so two ids
    that differ only there get different names. The name never starts with a dot, never holds
    a path separator, and ends in the extension of the format asked for.
    """
    safe = _UNSAFE.sub("_", request_id)[:_MAX_ID_IN_NAME]
    if safe != request_id:
        safe += "-" + hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"report-{safe}.{fmt}"


def check_new_file(path: Path, option: str, force: bool) -> None:
    """Refuse a ``path`` that exists (a file, a folder or a link, even a broken one) unless
    ``force``; then that it can be written. Called before the service is asked."""
    if not force and os.path.lexists(path) and not path.is_dir():  # a folder: said below
        raise ClientError(f"{path} exists; give --force to replace it, or {option} another file")
    check_writable_file(path, option)


def write_report(path: Path, data: bytes, option: str, force: bool) -> None:
    """Write ``data`` to ``path`` as a new file; only with ``force`` is an existing one
    replaced."""
    try:
        # "xb" is O_CREAT | O_EXCL: never an existing file, nor a file through a link
        with path.open("wb" if force else "xb") as f:
            f.write(data)
    except FileExistsError:  # created between the check and now
        raise ClientError(
            f"{path} exists; give --force to replace it, or {option} another file"
        ) from None
    except OSError as e:
        raise unwritable(path, option, e) from None


def cmd_report(args: argparse.Namespace) -> int:
    # the name is the CLI's, from the request id; checked before the service is asked
    out: Path = args.out or Path(report_name(args.request_id, args.format))
    check_new_file(out, "--out", args.force)
    client = IntakeClient(IntakeProfile.load(intake_profile_path(args.profile, args.workdir)))
    try:
        report = client.report(
            verification_pb2.ReportRequest(
                request_id=args.request_id, format=FORMATS[args.format], lang=args.lang
            )
        )
    finally:
        client.close()
    # report.filename, the service's suggestion, is not used: a name is the client's to make
    write_report(out, report.document, "--out", args.force)
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
        help="the `hedui up` working directory, whose intake.toml is used "
        "(default: none; an intake host gives --profile instead)",
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
        help="where to write it (default: report-REQUEST_ID.html or .pdf here, made from the "
        f"request id: characters outside {SAFE_CHARACTERS} become _); an existing file is "
        "not replaced without --force",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the file if it exists (default: refuse)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help=f"the intake profile to call with: an intake host's own ({INTAKE_STEP}), "
        "or one from `hedui keys issue` (default: WORKDIR/intake.toml)",
    )
    p.set_defaults(func=cmd_report)
