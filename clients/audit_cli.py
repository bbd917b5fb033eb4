"""``hedui audit …``: the auditor's commands."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hedui.clients.args import check_period, check_writable_file, date_arg, why_unwritable
from hedui.clients.errors import ClientError
from hedui.clients.intake import (
    AUDITOR_STEP,
    NO_BENEFIT,
    decision_text,
    figures_from_dict,
    format_fen,
)
from hedui.core.clock import DEPLOYMENT
from hedui.core.errors import HeduiError
from hedui.proto.v1 import audit_pb2

if TYPE_CHECKING:  # the log's code (SQLAlchemy, grpc, cryptography) is imported where used
    from hedui.audit.cosignature import WitnessPolicy
    from hedui.clients.auditor import AuditorSession

NOT_COSIGNED = 4  # exit status: the latest checkpoint lacks the pinned witnesses' cosignatures


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _session(args: argparse.Namespace) -> AuditorSession:
    from hedui.clients.auditor import AuditorProfile, open_profile_session, open_session
    from hedui.core.workdir import Workdir

    if args.profile:  # an auditor on a host of its own: through the service only
        profile = AuditorProfile.load(args.profile)
        return open_profile_session(profile, offline=args.offline, say=_say)
    return open_session(Workdir(args.workdir), offline=args.offline, say=_say)


def _pinned(args: argparse.Namespace) -> tuple[Path, str, Path | None]:
    """The log's public key file and origin this auditor checks against, and the state file
    its profile names (None: the default), all read without contacting the service."""
    from hedui.clients.auditor import AuditorProfile, log_origin
    from hedui.core.workdir import Workdir

    if args.profile:
        profile = AuditorProfile.load(args.profile)
        return profile.log_public_key, profile.log_origin, profile.state
    w = Workdir(args.workdir)
    return w.keys("auditor").root / "log" / "log.pub", log_origin(w), None


def witness_policy(workdir: Path | None, profile: Path | None) -> tuple[WitnessPolicy | None, str]:
    """The witnesses whose cosignatures this auditor requires (None: it pinned none), and
    where it pinned them: its profile's ``witness_vkeys`` (and ``witness_quorum``, default 1),
    or, with --workdir, the witness's verifier key in the auditor's key directory
    (``witness/witness.vkey``, given to it by `hedui up`)."""
    from hedui.audit.cosignature import WitnessPolicy
    from hedui.clients.intake import read_profile
    from hedui.core.workdir import Workdir

    quorum: object = 1
    if profile:
        doc = read_profile(profile, f"{profile} does not exist")
        where = f"{profile} witness_vkeys"
        vkeys = doc.get("witness_vkeys", [])
        vkeys = [vkeys] if isinstance(vkeys, str) else vkeys
        quorum = doc.get("witness_quorum", 1)
    else:
        if workdir is None:
            return None, "no --workdir or --profile"
        path = Workdir(workdir).keys("auditor").root / "witness" / "witness.vkey"
        where = str(path)
        try:
            vkeys = [path.read_text(encoding="utf-8").strip()]
        except FileNotFoundError:
            vkeys = []
        except OSError as e:
            raise ClientError(
                f"cannot read the witness's verifier key {path}: {e.strerror}"
            ) from None
    if not isinstance(vkeys, list) or not all(isinstance(v, str) for v in vkeys):
        raise ClientError(f"{where}: want a list of witness verifier keys (strings)")
    if not isinstance(quorum, int) or isinstance(quorum, bool):
        raise ClientError(f"{profile}: witness_quorum must be a whole number")
    if not vkeys:
        return None, where
    try:
        return WitnessPolicy.from_vkeys(vkeys, quorum), where
    except ValueError as e:
        raise ClientError(f"{where}: {e}") from None


def _where(args: argparse.Namespace) -> str:
    """How this command was pointed at the log, to repeat in a suggested command."""
    return f"--profile {args.profile}" if args.profile else f"--workdir {args.workdir}"


def _when(ms: int) -> str:
    return DEPLOYMENT.show(ms)


def _emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, ensure_ascii=False, indent=2))


def _entry_doc(index: int, data: bytes | dict[str, Any]) -> dict[str, Any]:
    """An entry (bytes, or already described) for ``--json``: its index, its time with the
    zone, and its described fields."""
    from hedui.audit.auditor import describe_entry

    d = describe_entry(data) if isinstance(data, bytes) else data
    return {"index": index, "time": _when(d["time_unix_ms"]), **d}


def cmd_verify(args: argparse.Namespace) -> int:
    from hedui.audit.auditor import AuditorState, NotCosigned, TamperingDetected, verify_log
    from hedui.clients.auditor import load_log_key, verify_export

    key_path, origin, profile_state = _pinned(args)
    if args.export:
        try:
            cp, n = verify_export(args.export, load_log_key(key_path), origin)
        except TamperingDetected as e:
            if args.json:
                _emit({"ok": False, "export": str(args.export), "tampering": str(e)})
            else:
                print(f"TAMPERING DETECTED in {args.export}: {e}", file=sys.stderr)
            return 2
        if args.json:
            _emit({"ok": True, "export": str(args.export), "entries": n, "tree_size": cp.size})
        else:
            print(
                f"export OK: {n} entries, each proven included in the signed tree of size {cp.size}"
            )
        return 0
    # the state file is checked before the deployment is contacted: it is written at the end
    state_path = args.state or profile_state or default_state_path(origin)
    check_writable_file(state_path, "--state", make_parents=True)
    try:
        state = AuditorState.load(state_path)
    except OSError as e:
        raise ClientError(
            f"cannot read the auditor state {state_path}: {e.strerror}; give another --state"
        ) from None
    witnesses, pinned_at = witness_policy(args.workdir, args.profile)
    session = _session(args)
    try:
        report = verify_log(session.source, session.public_key, session.origin, state, witnesses)
    except TamperingDetected as e:
        if args.json:
            _emit({"ok": False, "tampering": str(e)})
        else:
            print(f"TAMPERING DETECTED: {e}", file=sys.stderr)
        return 2
    except NotCosigned as e:
        if args.json:
            _emit({"ok": False, "tree_size": e.checkpoint.size, "not_cosigned": str(e)})
        else:
            print(f"NOT COSIGNED: {e}", file=sys.stderr)
        return NOT_COSIGNED
    except OSError as e:  # AuditorState.save, the only file verify_log writes
        raise ClientError(
            f"the log verified, but the auditor state {state_path} cannot be saved: "
            f"{why_unwritable(state_path, e)}; give --state a path in a folder you can write"
        ) from None
    doc: dict[str, Any] = {
        "ok": True,
        "entries": report.entries,
        "kinds": dict(sorted(report.kinds.items())),
        "tree_size": report.checkpoint.size,
        "root": report.checkpoint.root.hex(),
        "consistent_with_size": report.previous_size,
        "unsigned_entries": report.unsigned,
        "state": str(state.path),
        "cosignatures": None
        if report.cosignatures is None
        else [{"witness": c.name, "time": _when(c.timestamp * 1000)} for c in report.cosignatures],
    }
    if not args.json:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.kinds.items()))
        since = (
            f"; consistent with the checkpoint at size {report.previous_size} you verified before"
            if report.previous_size is not None
            else "; first verification, checkpoint saved"
        )
        print(
            f"log OK: {report.entries} entries ({kinds or 'none'}), root matches the signed checkpoint{since}"
        )
        for c in report.cosignatures or ():
            print(f"checkpoint cosigned by the witness {c.name} at {_when(c.timestamp * 1000)}")
        if report.cosignatures is None:
            print(
                f"warning: no witness verifier key pinned ({pinned_at}): the checkpoint's "
                "witness cosignatures were not checked",
                file=sys.stderr,
            )
        if report.unsigned:
            print(
                f"warning: {report.unsigned} stored entr{'y' if report.unsigned == 1 else 'ies'} beyond the signed "
                "checkpoint: either a writer stopped between storing and signing, or someone inserted rows; "
                "they are not verified",
                file=sys.stderr,
            )
        print(f"state: {state.path}")
    rc = _check_journal(args, session, report.checkpoint.size, doc)
    rc = max(rc, _check_judgements(args, session, report.checkpoint.size, doc), key=_worse)
    if args.json:
        doc["ok"] = rc == 0
        _emit(doc)
    return rc


def _check_journal(
    args: argparse.Namespace, session: AuditorSession, size: int, doc: dict[str, Any]
) -> int:
    """The key custodian's journal of decryptions, counted against the verified log (in
    ``doc["journal"]``; printed unless ``--json``)."""
    from hedui.audit.auditor import check_decryptions, read_journal
    from hedui.core.workdir import Workdir

    if args.journal:
        path = args.journal
    elif args.workdir:
        path = Workdir(args.workdir).custodian_dir / "decryptions.jsonl"
    else:
        return 0  # an auditor host counts the journal the custodian sends it (--journal)
    if not path.exists():
        if args.journal:
            raise ClientError(f"{path} does not exist; give the custodian's decryptions.jsonl")
        return 0
    try:
        records = read_journal(path)
    except OSError as e:
        raise ClientError(f"cannot read the custodian's journal {path}: {e.strerror}") from None
    check = check_decryptions(session.source, size, records)
    doc["journal"] = {
        "path": str(path),
        "decrypted": check.decrypted,
        "refused": check.refused,
        "tampering": check.forks + check.not_logged,
        "decrypted_without_verdict": check.without_verdict,
    }
    quiet = args.json
    if not quiet:
        print(
            f"custodian journal: {check.decrypted} decryption(s), {check.refused} refusal(s) ({path})"
        )
        for problem in check.forks + check.not_logged:
            print(f"TAMPERING DETECTED: {problem}", file=sys.stderr)
    if check.forks or check.not_logged:
        return 2
    if check.without_verdict:
        if not quiet:
            shown = ", ".join(check.without_verdict[:10])
            more = " …" if len(check.without_verdict) > 10 else ""
            print(
                f"DECRYPTIONS WITHOUT A VERDICT: {len(check.without_verdict)} query id(s) were "
                f"decrypted but no verdict or outcome entry followed: {shown}{more}",
                file=sys.stderr,
            )
        return 3
    return 0


def _worse(rc: int) -> int:
    """Exit codes by weight: tampering (2) over decryptions without a verdict (3)."""
    return {0: 0, 3: 1, 2: 2}.get(rc, 3)


def judgement_key_path(args: argparse.Namespace) -> Path | None:
    """The key custodian's judgement key the auditor pinned: ``--judgement-key``, else its
    profile's ``judgement_key``, else with ``--workdir`` the copy `hedui up` gave the auditor
    (``custodian/judgement.pub``)."""
    from hedui.clients.intake import read_profile
    from hedui.core.workdir import Workdir

    if args.judgement_key:
        return Path(args.judgement_key)
    if args.profile:
        pinned = read_profile(args.profile, f"{args.profile} does not exist").get("judgement_key")
        if pinned is not None and not isinstance(pinned, str):
            raise ClientError(f"{args.profile}: judgement_key must be a path")
        return Path(pinned) if pinned else None
    if args.workdir:
        path = Workdir(args.workdir).keys("auditor").judgement_public_path
        return path if path.exists() else None
    return None


def _check_judgements(
    args: argparse.Namespace, session: AuditorSession, size: int, doc: dict[str, Any]
) -> int:
    """Every verdict entry against the key custodian's signed decision record (in
    ``doc["judgements"]``; printed unless ``--json``): 2 when one differs."""
    from hedui.audit.auditor import check_judgements
    from hedui.core.keyfiles import read_public
    from hedui.core.signing import load_public_key

    path = judgement_key_path(args)
    if path is None:
        doc["judgements"] = None
        if not args.json:
            print(
                "warning: the key custodian's judgement key is not pinned: the verdicts' "
                "decisions were not checked against its signatures (give --judgement-key "
                "custodian/judgement.pub)",
                file=sys.stderr,
            )
        return 0
    try:
        key = load_public_key(read_public(path))
    except HeduiError as e:
        raise ClientError(f"--judgement-key: {e}") from None
    check = check_judgements(session.source, size, key)
    doc["judgements"] = {
        "key": str(path),
        "checked": check.checked,
        "before_issue_24": check.without,
        "tampering": check.problems,
    }
    if not args.json:
        older = f", {check.without} older without one" if check.without else ""
        print(f"custodian judgements: {check.checked} verdict(s) as the custodian signed{older}")
        for problem in check.problems:
            print(f"TAMPERING DETECTED: {problem}", file=sys.stderr)
    return 2 if check.problems else 0


def default_state_path(origin: str) -> Path:
    """Where an auditor keeps the last checkpoint seen: outside the operator's workdir."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "hedui" / f"auditor-{hashlib.sha256(origin.encode()).hexdigest()[:16]}.json"


# the kind column is as wide as the longest kind of entry (config_change), so rows stay aligned
# (tests/clients/test_small_displays.py checks it against AuditEntry's kinds)
KIND_WIDTH = 13


def _clipped(text: str, most: int = 40) -> str:
    """A value from an entry, cut to ``most`` characters (with …) for one line of a table."""
    return text if len(text) <= most else text[: most - 1] + "…"


def cmd_show(args: argparse.Namespace) -> int:
    from hedui.audit.auditor import describe_entry

    session = _session(args)
    size = session.signed_size()
    start = max(0, size - args.last)
    rows = session.source.entries(start, size) if size else []
    if args.json:
        _emit({"size": size, "entries": [_entry_doc(i, data) for i, data in rows]})
        return 0
    described = [(index, describe_entry(data)) for index, data in rows]
    caller_width = max([14] + [len(d["caller"]) for _, d in described])
    request_width = max([28] + [len(d.get("request_id", "")) for _, d in described])
    print(
        f"{'index':>6}  {'time':<26}  {'kind':<{KIND_WIDTH}}  {'caller':<{caller_width}}  "
        f"{'request':<{request_width}}  decision / detail"
    )
    for index, d in described:
        detail = decision_text(d["decision"]) if "decision" in d else ""
        if d["kind"] == "verdict":
            failed = [f["connector_id"] for f in d.get("connectors_failed", [])]
            benefit = (
                NO_BENEFIT
                if d.get("decision") == "NEEDS_REVIEW"
                else "committed"
                if "figures_commitment" in d
                else format_fen(int(d.get("benefit_fen", 0)))
            )
            detail += f" benefit {benefit}"
            detail += f" ({len(d.get('connectors_answered', []))} answered{', failed ' + ','.join(failed) if failed else ''})"
        elif d["kind"] == "search":
            detail = f"search by {d.get('by', '?')}: {d.get('results', 0)} result(s)"
        elif d["kind"] == "alert":
            detail = (
                f"{d.get('alert_kind', '?')} {d.get('subject', '')}: {d.get('description', '')}"
            )
        elif d["kind"] == "config_change":
            old, new = _clipped(d.get("old_value", "")), _clipped(d.get("new_value", ""))
            detail = f"{d.get('setting', '?')}: {old or '(unset)'} -> {new or '(unset)'}"
        elif d["kind"] == "key_event":
            detail = f"{d.get('event', '?')} {d.get('key_name', '')}"
        print(
            f"{index:>6}  {_when(d['time_unix_ms']):<26}  {d['kind']:<{KIND_WIDTH}}  "
            f"{d['caller']:<{caller_width}}  {d.get('request_id', ''):<{request_width}}  "
            f"{detail}".rstrip()
        )
    print(f"{size} entries in the log")
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    from hedui.audit.auditor import describe_entry, prove_inclusion

    session = _session(args)
    receipt = prove_inclusion(session.source, session.public_key, session.origin, args.index)
    cp, proof, data = receipt.checkpoint, receipt.proof, receipt.entry
    if args.json:
        # the receipt on its own: a third party checks it with the log's public key alone
        # (hedui.audit.auditor.check_receipt), "entry" is the readable copy of entry_base64
        print(
            json.dumps(
                {**receipt.to_json(), "entry": describe_entry(data)},
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    print(
        f"entry {args.index} is included in the signed tree of size {cp.size} (root {cp.root.hex()})"
    )
    for i, h in enumerate(proof):
        print(f"  proof[{i}] {h.hex()}")
    print(json.dumps(describe_entry(data), ensure_ascii=False, indent=2))
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    from hedui.audit.auditor import TamperingDetected, prove_consistency

    session = _session(args)
    try:
        got = prove_consistency(
            session.source, session.public_key, session.origin, args.first, args.second
        )
    except TamperingDetected as e:
        if args.json:
            _emit({"ok": False, "tampering": str(e)})
        else:
            print(f"TAMPERING DETECTED: {e}", file=sys.stderr)
        return 2
    if args.json:
        _emit({"ok": True, **got.to_json(session.origin)})
        return 0

    def side(size: int, root: bytes, note: bytes | None) -> str:
        how = "signed" if note is not None else "computed from the entries, no checkpoint signed"
        return f"size {size} (root {root.hex()}, {how})"

    print(
        f"the log's tree of {side(got.second, got.second_root, got.second_note)} extends its "
        f"tree of {side(got.first, got.first_root, got.first_note)}: "
        f"a consistency proof of {len(got.proof)} hash(es), verified"
    )
    for i, h in enumerate(got.proof):
        print(f"  proof[{i}] {h.hex()}")
    for note in (got.first_note, got.second_note):
        if note is not None:
            print()
            print(note.decode(), end="")
    return 0


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _date(text: str) -> dt.datetime:
    """A date on the command line as the start of that day in China Standard Time."""
    return dt.datetime.combine(date_arg(text), dt.time(), DEPLOYMENT.zone)


def cmd_search(args: argparse.Namespace) -> int:
    from hedui.audit.auditor import describe_entry
    from hedui.clients.auditor import search

    if not (args.id or args.caller or args.since):
        raise ClientError("say what to search for: --id ID, --caller NAME or --since DATE")
    check_period(args.since, args.until)
    session = _session(args)
    until = args.until + dt.timedelta(days=1) if args.until else None
    found = search(session, id_number=args.id, caller=args.caller, since=args.since, until=until)
    if args.json:
        _emit({"entries": [_entry_doc(i, data) for i, data in found], "logged": session.online})
        return 0
    for index, data in found:
        d = describe_entry(data)
        print(
            f"{index:>6}  {_when(d['time_unix_ms'])}  {d['kind']:<{KIND_WIDTH}} {d['caller']:<14} "
            f"{d.get('request_id', ''):<28} {decision_text(d['decision']) if 'decision' in d else ''}"
        )
    logged = (
        "this search was itself logged"
        if session.online
        else "read from the database directly (the service is down): this search was not logged"
    )
    print(f"{len(found)} entr{'y' if len(found) == 1 else 'ies'} found; {logged}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """A case file's verdict (``hedui verify --json`` output) against its audit entry: the
    entry is proven in the signed log, then its commitment opened with the file's figures."""
    from hedui.audit import commitment
    from hedui.audit.auditor import verify_inclusion

    try:
        d = json.loads(args.verdict.read_text(encoding="utf-8"))
        figures = figures_from_dict(d)
        index = int(d["audit"]["leaf_index"])
    except FileNotFoundError:
        raise ClientError(f"{args.verdict} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ClientError(f"cannot read {args.verdict}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ClientError(
            f"{args.verdict} is not a verdict saved by `hedui verify --json` "
            f"(missing or malformed: {e})"
        ) from None
    session = _session(args)
    data, _cp, _proof = verify_inclusion(session.source, session.public_key, session.origin, index)
    entry = audit_pb2.AuditEntry.FromString(data)
    if not entry.HasField("verdict") or entry.verdict.request_id != d.get("request_id"):
        print(f"entry {index} is not the verdict of request {d.get('request_id')!r}")
        return 2
    if not entry.verdict.figures_commitment:
        print(f"entry {index} holds no commitment (logged before figures were committed)")
        return 3
    if not commitment.opens(entry.verdict.figures_commitment, figures):
        print(
            f"MISMATCH: the figures in {args.verdict} are not those committed to in entry {index}"
        )
        return 2
    print(
        f"the benefit and figures in {args.verdict} are those committed to in entry {index} "
        "of the signed log"
    )
    return 0


ALERT_CALLER = "hedui-service"  # alerts are written by the service itself


def cmd_alerts(args: argparse.Namespace) -> int:
    from hedui.audit.auditor import describe_entry
    from hedui.clients.auditor import search

    check_period(args.since, args.until)
    session = _session(args)
    until = args.until + dt.timedelta(days=1) if args.until else None
    found = [
        (index, d)
        for index, data in search(
            session, id_number=None, caller=ALERT_CALLER, since=args.since, until=until
        )
        if (d := describe_entry(data))["kind"] == "alert"
    ]
    if args.json:
        _emit({"alerts": [_entry_doc(i, d) for i, d in found]})
        return 0
    for index, d in found:
        print(
            f"{index:>6}  {_when(d['time_unix_ms'])}  {d.get('alert_kind', '?'):<16} "
            f"{d.get('subject', ''):<24} {d.get('description', '')}"
        )
    print(f"{len(found)} alert{'' if len(found) == 1 else 's'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hedui.clients.auditor import export

    check_period(args.since, args.until)
    check_writable_file(args.out, "--out")  # before the deployment is contacted
    session = _session(args)
    n = export(session, args.since, args.until + dt.timedelta(days=1), args.out)
    print(
        f"exported {n} entries with inclusion proofs to {args.out}; check it with "
        f"`hedui audit verify {_where(args)} --export {args.out}`"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="auditor commands").add_subparsers(
        dest="audit_command", required=True
    )

    def common(p: argparse.ArgumentParser) -> None:
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument(
            "--workdir",
            type=Path,
            help="on the service's host, the deployment's working directory as `hedui up` "
            "makes it (its auditor profile and log database); this or --profile, no default",
        )
        where.add_argument(
            "--profile",
            type=Path,
            metavar="FILE",
            help="on an auditor's own host, its profile: the service's address, its TLS files, "
            f"the log's public key and origin, its state file ({AUDITOR_STEP}); "
            "this or --workdir, no default",
        )
        p.add_argument(
            "--offline",
            action="store_true",
            help="read the log's database directly, without the service; with --workdir only "
            "(default: the service when it runs, else, with --workdir, the database)",
        )

    p = audit.add_parser(
        "verify",
        help="verify the whole log against its signed checkpoint and the witness's cosignature",
        description="Exit status: 0 the log verified; 2 tampering (a changed entry, a fork, a "
        "witness cosignature that does not verify, a decryption of no logged request); 3 "
        "decryptions without a verdict; 4 the latest checkpoint is not cosigned by the "
        "witness you pinned (nothing saved).",
    )
    common(p)
    p.add_argument(
        "--state",
        type=Path,
        help="file where this auditor keeps the last checkpoint it verified "
        "(default: the profile's `state`, else $XDG_STATE_HOME/hedui/auditor-<origin digest>.json, "
        "or ~/.local/state/hedui/… without XDG_STATE_HOME)",
    )
    p.add_argument(
        "--export",
        type=Path,
        help="verify this file from `hedui audit export` instead of the log (default: the log)",
    )
    p.add_argument(
        "--journal",
        type=Path,
        help="the key custodian's journal of decryptions, counted against the log "
        "(default: with --workdir, the custodian's journal there when present; "
        "with --profile, none)",
    )
    p.add_argument(
        "--judgement-key",
        type=Path,
        help="the key custodian's judgement key (custodian/judgement.pub): every verdict entry "
        "is checked against the decision the custodian signed (default: the profile's "
        "judgement_key, or with --workdir the auditor's copy there)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON, times with their zone (default: text)",
    )
    p.set_defaults(func=cmd_verify)

    p = audit.add_parser("show", help="recent entries")
    common(p)
    p.add_argument(
        "--last",
        type=_count,
        default=20,
        help="how many of the latest entries to show (default: %(default)s)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the entries as JSON, times with their zone (default: text)",
    )
    p.set_defaults(func=cmd_show)

    p = audit.add_parser("prove", help="prove that one entry is in the signed log")
    common(p)
    p.add_argument("index", type=_count, help="index of the entry (0 is the first)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the receipt as JSON: the entry's bytes (base64), its leaf hash, the signed "
        "checkpoint and the proof, checkable with the log's public key alone (default: text)",
    )
    p.set_defaults(func=cmd_prove)

    p = audit.add_parser(
        "consistency", help="prove that the log's tree of one size extends the tree of another"
    )
    common(p)
    p.add_argument("first", type=_count, help="the smaller tree size (1 or more)")
    p.add_argument(
        "second",
        type=_count,
        nargs="?",
        help="the larger tree size (default: the size of the latest signed checkpoint)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print both sizes, roots and signed checkpoints and the proof as JSON (default: text)",
    )
    p.set_defaults(func=cmd_consistency)

    def period(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--since",
            type=_date,
            help="first day YYYY-MM-DD, China Standard Time (default: the log's start)",
        )
        p.add_argument(
            "--until", type=_date, help="last day YYYY-MM-DD, included (default: no end)"
        )

    p = audit.add_parser("search", help="entries about a person, by a caller, or since a date")
    common(p)
    p.add_argument(
        "--id",
        help="entries about this applicant's ID number, searched by its audit token; "
        "needs the running service (default: any person)",
    )
    p.add_argument(
        "--caller",
        help="entries by this caller, named as in its certificate, e.g. intake "
        "(default: any caller)",
    )
    period(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the entries found as JSON, times with their zone (default: text)",
    )
    p.set_defaults(func=cmd_search)

    p = audit.add_parser(
        "check", help="check a case file's verdict figures against the log's commitment"
    )
    common(p)
    p.add_argument(
        "--verdict",
        type=Path,
        required=True,
        help="the verdict as saved with the case (`hedui verify --json` output)",
    )
    p.set_defaults(func=cmd_check)

    p = audit.add_parser(
        "alerts", help="alerts the service wrote to the log (e.g. bursts of unknown applicants)"
    )
    common(p)
    period(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print the alerts as JSON, times with their zone (default: text)",
    )
    p.set_defaults(func=cmd_alerts)

    p = audit.add_parser("export", help="entries of a period with proofs, verifiable offline")
    common(p)
    p.add_argument(
        "--since", type=_date, required=True, help="first day YYYY-MM-DD, China Standard Time"
    )
    p.add_argument("--until", type=_date, required=True, help="last day YYYY-MM-DD, included")
    p.add_argument(
        "--out", type=Path, required=True, help="JSON file to write (replaced if it exists)"
    )
    p.set_defaults(func=cmd_export)
