"""The ``hedui`` command line.

Library code raises :class:`hedui.core.errors.HeduiError`; only :func:`main` catches it and
prints a message for a person (with the traceback only under ``--verbose``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from hedui.clients import audit_cli, policy_cli
from hedui.clients.args import date_arg
from hedui.clients.deploy import Deployment, DeploySettings, prepare, run_until_signalled
from hedui.clients.errors import ClientError
from hedui.clients.intake import (
    IntakeClient,
    IntakeProfile,
    format_fen,
    verdict_to_dict,
    verdict_to_text,
)
from hedui.core.clock import DEPLOYMENT
from hedui.core.errors import HeduiError
from hedui.core.resident_id import parse as parse_id
from hedui.core.workdir import Workdir
from hedui.proto.v1 import common_pb2, verification_pb2


def _today() -> dt.date:
    return DEPLOYMENT.today()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _ZonedFormatter(logging.Formatter):
    """Log times in the deployment's zone, with the zone written out (not the machine's)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return DEPLOYMENT.show(int(record.created * 1000))


def _setup_logging(verbose: bool) -> None:
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr) if verbose else logging.NullHandler()
    ]
    for h in handlers:
        h.setFormatter(_ZonedFormatter(_LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=handlers)


def _log_to(log_dir: Path) -> None:
    """Also log to ``log_dir/hedui.log`` (for `hedui up`, once its workdir exists)."""
    handler = logging.FileHandler(log_dir / "hedui.log", encoding="utf-8")
    handler.setFormatter(_ZonedFormatter(_LOG_FORMAT))
    logging.getLogger().addHandler(handler)


# -- commands -------------------------------------------------------------------------------


def cmd_keys_init(args: argparse.Namespace) -> int:
    settings = DeploySettings(
        workdir=args.workdir, paillier_bits=args.paillier_bits, banks=args.banks
    )
    w = Workdir(args.workdir)
    w.prepare()
    w.keys.init(
        settings.connectors(),
        paillier_bits=args.paillier_bits,
        on_create=lambda s: _say(f"creating {s}"),
    )
    print(f"keys ready in {w.keys.root}")
    return 0


def _standard_on(as_of: dt.date) -> int:
    from hedui.server.policy.book import PolicyBook

    return PolicyBook.builtin().regions["demo"].get("dibao_standard", as_of).value


def cmd_population_generate(args: argparse.Namespace) -> int:
    from hedui.connectors.population import generate

    as_of = args.as_of or _today()
    summary = generate(
        args.out,
        households=args.households,
        seed=args.seed,
        as_of=as_of,
        standard_fen=_standard_on(as_of),
    )
    print(
        f"{summary.households} households, {summary.people} people, {len(summary.files)} files in {args.out}"
    )
    return 0


def cmd_connector_import(args: argparse.Namespace) -> int:
    from hedui.clients.deploy import record_import
    from hedui.connectors.importer import (
        check_shrink,
        current_population,
        read_dataset,
        write_database,
    )
    from hedui.core.deployment import default_connector_ids
    from hedui.core.keystore import REGISTRY_ID

    w = Workdir(args.workdir)
    cid = args.connector
    if cid != REGISTRY_ID and cid not in default_connector_ids():
        raise ClientError(
            f"unknown connector {cid!r}; connectors are registry, the departments and bank-01..bank-73"
        )
    if not args.file.is_file():
        raise ClientError(f"{args.file} is not a file")
    data = read_dataset(args.file, cid, w.keys, today=_today())
    before = current_population(w.connector_db(cid), cid)
    if not args.allow_shrink:
        check_shrink(cid, before, data.size)
    write_database(w.connector_db(cid), data)
    index = record_import(w, cid, before, data.size)
    what = (
        "residents into the household register"
        if cid == REGISTRY_ID
        else f"people into {cid} (stored by token, not by ID number)"
    )
    print(
        f"imported {data.size} {what} (before: {before if before is not None else 'none'}; "
        f"audit entry {index}); restart `hedui up` to serve the new data"
    )
    return 0


def _deploy_settings(args: argparse.Namespace, workdir: Path, data: Path | None) -> DeploySettings:
    return DeploySettings(
        workdir=workdir,
        data=data,
        insecure=args.insecure,
        paillier_bits=args.paillier_bits,
        min_banks=args.min_banks,
        query_timeout_seconds=args.timeout,
    )


def cmd_up(args: argparse.Namespace) -> int:
    settings = _deploy_settings(args, args.workdir, args.data)
    holder = Workdir(args.workdir)
    holder.lock()  # one deployment per workdir: a second `hedui up` refuses
    try:
        w = prepare(settings, _say, _today())
        _log_to(w.log_dir)
        if args.insecure:
            _say(
                "WARNING: --insecure: plaintext channels without authentication; for local experiments only"
            )
        deployment = Deployment(settings, w)
        _say(f"starting {len(settings.connectors()) + 1} connectors and the verification service …")
        run_until_signalled(
            deployment,
            lambda address: print(
                f"ready: verification service at {address} (intake profile {w.intake_profile}); Ctrl-C stops",
                flush=True,
            ),
        )
    finally:
        holder.unlock()
    _say("stopped")
    return 0


def _request(args: argparse.Namespace, id_number: str) -> verification_pb2.VerifyRequest:
    request_id = args.request_id or f"cli-{uuid.uuid4()}"
    return verification_pb2.VerifyRequest(
        request_id=request_id,
        id_number=id_number,
        program=args.program,
        region=args.region or "",
        consent_reference=args.consent or f"consent-on-file:{request_id}",
        as_of=args.as_of.isoformat() if args.as_of else "",
    )


def cmd_verify(args: argparse.Namespace) -> int:
    client = IntakeClient(IntakeProfile.load(Workdir(args.workdir).intake_profile))
    try:
        verdict = client.verify(_request(args, args.id))
    finally:
        client.close()
    if args.json:
        print(json.dumps(verdict_to_dict(verdict), ensure_ascii=False, indent=2))
    else:
        print(verdict_to_text(verdict))
    return 0


def cmd_bench_load(args: argparse.Namespace) -> int:
    from hedui.clients.loadgen import run_load

    w = Workdir(args.workdir)
    try:
        applicants = [
            line.strip()
            for line in args.ids.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except OSError as e:
        raise ClientError(f"cannot read {args.ids}: {e.strerror}") from None
    result = run_load(
        IntakeProfile.load(w.intake_profile),
        applicants,
        concurrency=args.concurrency,
        seconds=args.seconds,
        program=args.program,
        prefix=f"load-{uuid.uuid4().hex[:8]}",
    )
    print(result.summary())
    return 0 if result.completed else 1


def cmd_recheck(args: argparse.Namespace) -> int:
    from hedui.clients.recheck import progress_bar, recheck

    w = Workdir(args.workdir)
    out = args.out or args.ids.with_suffix(".verdicts.jsonl")
    try:
        summary = recheck(
            IntakeProfile.load(w.intake_profile),
            args.ids,
            out,
            program=args.program,
            campaign=args.campaign,
            progress=progress_bar() if not args.quiet else (lambda d, t: None),
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; results so far are in {out}; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(summary.text())
    print(f"verdicts: {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hedui.connectors.population import generate

    today = _today()
    with tempfile.TemporaryDirectory(prefix="hedui-demo-") as tmp:
        root = Path(tmp)
        _say(f"generating {args.households} households …")
        summary = generate(
            root / "data",
            households=args.households,
            seed=args.seed,
            as_of=today,
            standard_fen=_standard_on(today),
        )
        settings = _deploy_settings(args, root / "work", root / "data")
        w = prepare(settings, _say, today)
        deployment = Deployment(settings, w)
        _say("starting 87 connectors and the verification service …")
        deployment.start()
        try:
            heads = dict(summary.applicants)
            picks = [(label, heads[h]) for label, h in summary.thresholds]
            chosen = {p[1] for p in picks}
            others = [i for _, i in summary.applicants if i not in chosen]
            picks += [("random", i) for i in others[: max(0, args.samples - len(picks))]]
            picks = picks[: args.samples]
            client = IntakeClient(IntakeProfile.load(w.intake_profile))
            rows = []
            try:
                for label, id_number in picks:
                    args.request_id = None
                    start = time.perf_counter()
                    verdict = client.verify(_request(args, id_number))
                    ms = (time.perf_counter() - start) * 1000
                    rows.append((label, parse_id(id_number).masked(), verdict, ms))
            finally:
                client.close()
        finally:
            deployment.stop()
    if args.json:
        out = []
        for label, masked, verdict, ms in rows:
            d = verdict_to_dict(verdict)
            d.update({"sample": label, "id_masked": masked, "time_ms": round(ms)})
            out.append(d)
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(
        f"{'sample':<24} {'applicant':<20} {'size':>4}  {'decision':<13} {'benefit':>10}  {'time':>7}  undecided/failed rules"
    )
    for label, masked, v, ms in rows:
        notes = ",".join(r.id for r in v.rules if r.outcome != common_pb2.PASSED)
        print(
            f"{label:<24} {masked:<20} {v.household_size:>4}  {common_pb2.Decision.Name(v.decision):<13} "
            f"{format_fen(v.benefit_fen):>10}  {ms:>5.0f}ms  {notes or '-'}"
        )
    print(
        f"\n{len(rows)} verifications against 87 connectors; benefit in yuan per month; policy {rows[0][2].policy_version if rows else '-'}"
    )
    return 0


# -- parser ---------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_deploy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--insecure", action="store_true", help="plaintext channels (local experiments only)"
    )
    p.add_argument("--paillier-bits", type=int, default=2048, help="Paillier key size for new keys")
    p.add_argument(
        "--min-banks", type=int, default=3, help="fewest bank answers the custodian decrypts"
    )
    p.add_argument(
        "--timeout", type=float, default=10.0, help="deadline of each connector query (s)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hedui", description="household economic-status verification (核对)"
    )
    parser.add_argument("--verbose", action="store_true", help="log to stderr and show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="key management").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("init", help="create the CA, certificates and keys of a deployment")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--paillier-bits", type=int, default=2048)
    p.add_argument("--banks", type=int, default=73)
    p.set_defaults(func=cmd_keys_init)

    pop = sub.add_parser("population", help="synthetic data").add_subparsers(
        dest="pop_command", required=True
    )
    p = pop.add_parser("generate", help="write a synthetic population as one CSV per connector")
    p.add_argument("--households", type=_positive, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--as-of", type=date_arg, help="date whose standard sets the threshold households"
    )
    p.set_defaults(func=cmd_population_generate)

    con = sub.add_parser("connector", help="connector data").add_subparsers(
        dest="con_command", required=True
    )
    p = con.add_parser("import", help="replace a connector's data with a CSV file")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--connector", required=True, help="registry, hrss, tax, …, bank-01 … bank-73")
    p.add_argument("--file", type=Path, required=True, help="CSV file with a header row")
    p.add_argument(
        "--allow-shrink",
        action="store_true",
        help="accept a file that drops over 20%% of the connector's people (default: refused)",
    )
    p.set_defaults(func=cmd_connector_import)

    p = sub.add_parser("up", help="run a deployment on this machine until Ctrl-C")
    p.add_argument(
        "--data", type=Path, help="folder of <connector>.csv files (needed the first time)"
    )
    p.add_argument("--workdir", type=Path, required=True)
    _add_deploy_flags(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("verify", help="verify one applicant (the intake client)")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--id", required=True, help="the applicant's resident ID number")
    p.add_argument("--program", required=True, help="programme: dibao, dibian, zhichu or tekun")
    p.add_argument("--region", help="region (default: the deployment's)")
    p.add_argument("--as-of", type=date_arg, help="application date (default: today)")
    p.add_argument("--consent", help="reference of the applicant's consent")
    p.add_argument("--request-id", help="idempotency key (default: a new one)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    audit_cli.add_parser(sub)
    policy_cli.add_parser(sub)

    p = sub.add_parser(
        "recheck", help="re-verify a roster of enrolled applicants (半年复核), resumable"
    )
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--ids", type=Path, required=True, help="the roster: one ID number per line")
    p.add_argument("--program", default="dibao")
    p.add_argument(
        "--out", type=Path, help="JSON lines of verdicts (default: <ids>.verdicts.jsonl)"
    )
    p.add_argument(
        "--campaign", help="name of this re-verification round (default: from the roster)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_recheck)

    bench = sub.add_parser("bench", help="load generators").add_subparsers(
        dest="bench_command", required=True
    )
    p = bench.add_parser("load", help="concurrent Verify calls against a running deployment")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--ids", type=Path, required=True, help="applicant ID numbers, one per line")
    p.add_argument("--concurrency", type=_positive, default=8)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--program", default="dibao")
    p.set_defaults(func=cmd_bench_load)

    p = sub.add_parser(
        "demo", help="generate, start, verify a sample and stop, in a temporary folder"
    )
    p.add_argument("--households", type=_positive, default=200)
    p.add_argument("--samples", type=_positive, default=14)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    _add_deploy_flags(p)
    p.set_defaults(
        func=cmd_demo, program="dibao", region=None, as_of=None, consent=None, request_id=None
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except HeduiError as e:
        if args.verbose:
            logging.exception("failed")
        print(f"hedui: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hedui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
