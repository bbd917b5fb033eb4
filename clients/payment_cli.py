"""``hedui payment``: the payment system's side of the ``decision_only`` disclosure (issue #24).

An intake system configured ``decision_only`` passes each verdict's sealed benefit to payment
without being able to read it. The payment system makes its key pair once (``hedui payment
keys``; the public key goes to the service's operator, ``[disclosure]`` in service.toml) and
opens each sealed benefit with its private key (``hedui payment open``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hedui.clients.args import check_writable_dir
from hedui.clients.errors import ClientError


def cmd_keys(args: argparse.Namespace) -> int:
    from hedui.core.keyfiles import write_public, write_secret
    from hedui.core.payment import new_payment_key

    check_writable_dir(args.out, "--out")
    private, public = new_payment_key()
    key, pub = args.out / "payment.key", args.out / "payment.pub"
    for path in (key, pub):
        if path.exists():
            raise ClientError(f"{path} exists: a payment key is never replaced silently")
    write_secret(key, private)
    write_public(pub, public)
    print(f"payment key: {key} (keep it on the payment system; mode 0600)")
    print(f"public key:  {pub} (give it to the verification service's operator)")
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    from hedui.core.errors import CryptoError
    from hedui.core.keyfiles import read_secret
    from hedui.core.payment import load_private, open_benefit

    key = load_private(read_secret(args.key), str(args.key))
    try:
        lines = args.verdicts.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ClientError(f"cannot read {args.verdicts}: {e.strerror}") from None
    opened = 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)  # `verify --json`'s verdict, or a recheck results line
            sealed = bytes.fromhex(d.get("sealed_benefit", ""))
            request_id = str(d["request_id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ClientError(
                f"{args.verdicts} line {n} is not a verdict as `hedui verify --json` or "
                "`hedui recheck` write it"
            ) from None
        if not sealed:
            continue
        try:
            print(json.dumps(open_benefit(key, sealed, request_id), ensure_ascii=False))
        except CryptoError as e:
            raise ClientError(f"{args.verdicts} line {n}: {e}") from None
        opened += 1
    if not opened:
        raise ClientError(f"{args.verdicts} holds no sealed benefit")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pay = sub.add_parser(
        "payment", help="the payment system: keys for sealed benefits, and opening them"
    ).add_subparsers(dest="payment_command", required=True)
    p = pay.add_parser("keys", help="make the payment system's key pair (X25519)")
    p.add_argument("--out", type=Path, required=True, help="folder for payment.key and payment.pub")
    p.set_defaults(func=cmd_keys)
    p = pay.add_parser(
        "open", help="open the sealed benefits of verdicts (JSON lines) with the payment key"
    )
    p.add_argument("--key", type=Path, required=True, help="the payment system's payment.key")
    p.add_argument(
        "--verdicts",
        type=Path,
        required=True,
        help="verdicts as JSON, one per line (`hedui verify --json`, a recheck results file)",
    )
    p.set_defaults(func=cmd_open)
