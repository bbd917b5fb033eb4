"""``hedui console``: serve the web console on this host until Ctrl-C."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import urllib.parse
from pathlib import Path

from hedui.clients.errors import ClientError


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _origin(text: str) -> str:
    """``--origin``: scheme://host[:port], as a browser sends it in ``Origin``."""
    url = urllib.parse.urlsplit(text.rstrip("/"))
    if url.scheme not in ("http", "https") or not url.netloc or url.path or url.query:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an origin such as https://console.example.org or "
            "http://127.0.0.1:8765"
        )
    return f"{url.scheme}://{url.netloc.lower()}"


def cmd_console(args: argparse.Namespace) -> int:
    import uvicorn

    from hedui.clients.audit_cli import witness_policy
    from hedui.clients.auditor import open_session
    from hedui.clients.console.app import Console, ConsoleSettings, build_app
    from hedui.core.workdir import Workdir

    # the witnesses whose cosignatures the checkpoints must carry, pinned as for `hedui audit
    # verify --workdir` (the witness's vkey in the auditor's key directory, from `hedui up`)
    witnesses, pinned_at = witness_policy(args.workdir, None)
    session = open_session(Workdir(args.workdir), offline=args.offline, say=_say)
    settings = ConsoleSettings(page_size=args.page_size, origins=tuple(args.origin or ()))
    console = Console(session, settings, witnesses=witnesses, witnesses_pinned_at=pinned_at)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        raise ClientError(
            f"cannot listen on {args.host}:{args.port}: {e.strerror}; give another --port "
            "(0 takes a free one)"
        ) from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not _is_loopback(args.host):
        _say(
            f"warning: the console listens on {args.host}, beyond this host, over plain HTTP; "
            "put it behind a TLS proxy or keep the default 127.0.0.1"
        )
    where = "the running deployment" if session.online else "the log's database (offline)"
    if witnesses is None:
        _say(
            f"warning: no witness verifier key pinned ({pinned_at}): the console does not "
            "check the checkpoints' witness cosignatures"
        )
    print(
        f"hedui console reading {where}; open in a browser on this host:\n"
        f"    http://{shown}:{port}/?token={console.token}\n"
        "The token is new at every start and is needed once per browser; Ctrl-C stops.",
        flush=True,
    )
    config = uvicorn.Config(
        build_app(console), log_level="warning", access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "console",
        help="the web console for auditors and supervisors: the log, checks in the browser, "
        "charts and the monthly bulletin",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        required=True,
        help="the deployment's folder (its auditor certificate and log key are used)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this host only)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port to listen on, 0 for a free one (default: %(default)s)",
    )
    p.add_argument(
        "--page-size", type=int, default=50, help="log entries per page (default: %(default)s)"
    )
    p.add_argument(
        "--origin",
        type=_origin,
        action="append",
        metavar="URL",
        help="another origin browsers reach the console by, e.g. https://console.example.org "
        "of a TLS proxy in front of it (repeatable; forms from any other origin are refused; "
        "default: only the address it listens on)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="read the log's database directly even if the deployment runs "
        "(default: through the service)",
    )
    p.set_defaults(func=cmd_console)
