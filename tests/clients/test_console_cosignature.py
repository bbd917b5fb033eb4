"""Issue #23 item 4: the web console checks the witness's cosignatures (c2sp.org/tlog-cosignature)
of the checkpoint it shows and the browser proves against, with the witness's verifier key
pinned as `hedui audit verify` pins it (the auditor's ``witness/witness.vkey``): green only when
cosigned, saying by whom and when; a checkpoint without the cosignature is NOT COSIGNED, one
whose cosignature does not verify is said so, both in red and refused to the browser's checks;
with no witness pinned the pages say the cosignatures were not checked.

A real `hedui console --offline` over a log a real witness (tests/witnessing.py) cosigned, read
with raw HTTP; the latest checkpoint's note is then replaced in the log's database by the
stripped or forged notes made here."""

from __future__ import annotations

import base64
import html
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.audit.checkpoint import Checkpoint, sign_checkpoint
from hedui.audit.cosignature import (
    WitnessPolicy,
    add_cosignatures,
    cosign,
    cosigner_key_id,
    split_note,
)
from hedui.audit.log import AuditLog
from hedui.audit.store import LogStore, open_log_engine
from hedui.core import signing
from hedui.core.clock import DEPLOYMENT
from hedui.core.workdir import Workdir
from hedui.proto.v1 import audit_pb2
from tests.clients.test_console_http import Console, start_console
from tests.witnessing import WITNESS_NAME, LocalWitness

ORIGIN = "hedui.test/console-cosigned-log"
KEY = Ed25519PrivateKey.generate()
PAGES = ("/log", "/verify", "/entry/0", "/campaigns", "/bulletin")


@dataclass
class Cosigned:
    """The console over a cosigned log, and what the test needs to change its latest note."""

    console: Console
    db: Path
    size: int
    note: bytes  # the latest checkpoint as the witness cosigned it
    previous: bytes  # the one before, cosigned too
    witness_key: Ed25519PrivateKey
    witness_vkey: str
    root: Path

    def latest_is(self, note: bytes) -> None:
        """The latest checkpoint in the log's database is ``note`` from now on."""
        with closing(sqlite3.connect(self.db)) as con, con:
            con.execute("UPDATE log_checkpoint SET note = ? WHERE size = ?", (note, self.size))


def _entry(n: int) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        time_unix_ms=1_770_000_000_000 + n,
        caller="t",
        config_change=audit_pb2.ConfigChange(setting=f"s{n}"),
    )


def _workdir(root: Path, db: Path, witness_vkey: str | None) -> Path:
    """A workdir the console reads offline: the log's database and public key, and the
    witness's verifier key where `hedui up` gives it to the auditor (unless None)."""
    w = Workdir(root)
    w.service_config.parent.mkdir(parents=True)
    w.service_config.write_text(
        f'[service]\naudit_database = "sqlite:///{db}"\nlog_origin = "{ORIGIN}"\n'
    )
    keys = w.keys("auditor").root
    (keys / "log").mkdir(parents=True)
    (keys / "log" / "log.pub").write_bytes(signing.public_key_to_pem(KEY.public_key()))
    if witness_vkey is not None:
        (keys / "witness").mkdir()
        (keys / "witness" / "witness.vkey").write_text(witness_vkey + "\n")
    return root


@pytest.fixture(scope="module")
def cosigned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cosigned]:
    tmp = tmp_path_factory.mktemp("console-cosigned")
    db = tmp / "audit.sqlite"
    witness = LocalWitness.start(tmp / "witness", ORIGIN, KEY)
    try:
        log = AuditLog(
            LogStore(open_log_engine(f"sqlite:///{db}")),
            origin=ORIGIN,
            signing_key=KEY,
            witnesses=witness.witnessing(),
        )
        log.append([_entry(0), _entry(1)])
        log.append([_entry(2)])
        witness_vkey = witness.vkey
    finally:
        witness.stop()
    size = 3
    note, previous = log.store.checkpoint_at(size), log.store.checkpoint_at(2)
    assert note is not None and previous is not None
    log.store.engine.dispose()
    # an insider with the database file, who can put any note in it: the append-only
    # triggers of the checkpoints dropped
    with closing(sqlite3.connect(db)) as con, con:
        triggers = con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'log_checkpoint'"
        ).fetchall()
        assert triggers
        for (name,) in triggers:
            con.execute(f'DROP TRIGGER "{name}"')
    root = _workdir(tmp / "work", db, witness_vkey)
    console = start_console(root)
    console.sign_in()
    state = Cosigned(console, db, size, note, previous, witness.key, witness_vkey, root)
    yield state
    output = console.stop()
    assert "Traceback" not in output, output


@pytest.fixture
def latest(cosigned: Cosigned) -> Iterator[Cosigned]:
    """The cosigned log, its latest checkpoint as the witness cosigned it after the test."""
    yield cosigned
    cosigned.latest_is(cosigned.note)


@dataclass
class Panel:
    css: str
    state: str
    text: str


def _panel(console: Console, path: str) -> Panel:
    """The cosignature panel of the page at ``path``: its colour, state and text."""
    status, _, body = console.request("GET", path)
    assert status == 200, (path, status, body[:500])
    found = re.findall(
        r'<div class="check cosign ([a-z]+)" id="cosignature" data-cosignature="([a-z_]+)"'
        r"[^>]*>(.*?)\n</div>",
        body,
        re.S,
    )
    assert len(found) == 1, (path, body)
    css, state, inner = found[0]
    return Panel(css, state, html.unescape(re.sub(r"<[^>]+>", " ", inner)))


def _api(console: Console) -> tuple[int, dict[str, object]]:
    status, headers, body = console.request("GET", "/api/checkpoint")
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


def _bare(note: bytes) -> bytes:
    """``note`` with the log's signature alone."""
    text, lines = split_note(note)
    return text + b"\n" + (lines[0] + "\n").encode()


def _red(console: Console, state: str, words: str) -> None:
    """Every page says ``words`` in red (never green), and the browser gets no checkpoint."""
    for path in PAGES:
        panel = _panel(console, path)
        assert (panel.css, panel.state) == ("bad", state), (path, panel)
        assert words in panel.text, (path, panel.text)
        assert "✔" not in panel.text and "cosigned by the witness" not in panel.text
    status, doc = _api(console)
    assert status == 409 and "note" not in doc, doc
    assert words in str(doc["error"])
    assert doc["cosignature"] == {
        "state": state,
        "size": 3,
        "message": doc["error"],
        "cosignatures": [],
    }


def test_a_cosigned_checkpoint_shows_the_witness_and_when_in_green(cosigned: Cosigned) -> None:
    (c,) = WitnessPolicy.from_vkeys([cosigned.witness_vkey]).check(cosigned.note)
    when = DEPLOYMENT.show(c.timestamp * 1000)
    said = f"cosigned by the witness {WITNESS_NAME} at {when}"
    for path in PAGES:
        panel = _panel(cosigned.console, path)
        assert (panel.css, panel.state) == ("ok", "cosigned"), (path, panel)
        assert said in panel.text and f"已由见证方 {WITNESS_NAME} 于 {when} 联署" in panel.text
        assert "（大小 3）" in panel.text
    status, doc = _api(cosigned.console)
    assert status == 200 and doc["note"] == cosigned.note.decode()
    assert doc["cosignature"] == {
        "state": "cosigned",
        "size": 3,
        "message": doc["cosignature"]["message"],  # type: ignore[index]
        "cosignatures": [{"witness": WITNESS_NAME, "time": when}],
    }
    # the verify page names the witness's key it checks against
    _, _, body = cosigned.console.request("GET", "/verify")
    assert re.search(rf'id="witness-vkeys"><div>{re.escape(cosigned.witness_vkey)}</div>', body)


def test_a_checkpoint_the_witness_did_not_cosign_is_not_cosigned_in_red(latest: Cosigned) -> None:
    bare = _bare(latest.note)
    latest.latest_is(bare)
    _red(latest.console, "not_cosigned", "NOT COSIGNED")
    _red(latest.console, "not_cosigned", "not cosigned by the log's witness")
    # a cosignature by a witness the auditor did not pin, even under the pinned one's name,
    # is not the pinned witness's: still not cosigned
    body = split_note(bare)[0]
    now = int(time.time())
    for name in ("hedui.test/other-witness", WITNESS_NAME):
        line = cosign(body, name, Ed25519PrivateKey.generate(), now).decode()
        latest.latest_is(add_cosignatures(bare, [line.removesuffix("\n")]))
        _red(latest.console, "not_cosigned", "NOT COSIGNED")
    # and the genuine note again: green
    latest.latest_is(latest.note)
    assert _panel(latest.console, "/verify").css == "ok"
    assert _api(latest.console)[0] == 200


def _as_the_witness(line: bytes, witness: str) -> str:
    """A cosignature line made with another key, its key ID replaced by the witness's."""
    name, blob = line.decode().removesuffix("\n").removeprefix("— ").split(" ")
    raw = base64.b64decode(blob)
    return f"— {name} {base64.b64encode(bytes.fromhex(witness) + raw[4:]).decode()}"


def test_a_cosignature_that_does_not_verify_is_said_so_in_red(latest: Cosigned) -> None:
    bare = _bare(latest.note)
    body = split_note(bare)[0]
    witness_id = cosigner_key_id(WITNESS_NAME, latest.witness_key.public_key()).hex()
    now = int(time.time())
    # signed by another key, presented as the witness's (its name and key ID)
    other = cosign(body, WITNESS_NAME, Ed25519PrivateKey.generate(), now)
    latest.latest_is(add_cosignatures(bare, [_as_the_witness(other, witness_id)]))
    _red(latest.console, "invalid", "cosignature does not verify")
    # the witness's real cosignature of the checkpoint before, pasted under this one
    _, lines = split_note(latest.previous)
    pasted = [line for line in lines if line.split(" ")[1] == WITNESS_NAME]
    assert len(pasted) == 1
    latest.latest_is(add_cosignatures(bare, pasted))
    _red(latest.console, "invalid", "cosignature does not verify")
    # the witness's own key, dated a day ahead of this clock
    ahead = cosign(body, WITNESS_NAME, latest.witness_key, now + 86_400).decode()
    latest.latest_is(add_cosignatures(bare, [ahead.removesuffix("\n")]))
    _red(latest.console, "invalid", "in the future")
    # a checkpoint the log's key did not sign: the witness's cosignature is not taken for it
    forged = sign_checkpoint(Checkpoint.from_body(body), ORIGIN, Ed25519PrivateKey.generate())
    cosigned = cosign(body, WITNESS_NAME, latest.witness_key, now).decode()
    latest.latest_is(add_cosignatures(forged, [cosigned.removesuffix("\n")]))
    _red(latest.console, "invalid", "log signature does not verify")


def test_without_a_pinned_witness_the_cosignatures_are_not_checked(
    cosigned: Cosigned, tmp_path: Path
) -> None:
    root = _workdir(tmp_path / "work", cosigned.db, None)
    console = start_console(root)
    try:
        console.sign_in()
        for path in PAGES:
            panel = _panel(console, path)
            assert (panel.css, panel.state) == ("warn", "unchecked"), (path, panel)
            assert "cosignatures were not checked" in panel.text
            assert str(Path("witness") / "witness.vkey") in panel.text
            assert "✔" not in panel.text
        status, doc = _api(console)
        assert status == 200 and doc["cosignature"]["state"] == "unchecked"  # type: ignore[index]
        _, _, body = console.request("GET", "/verify")
        assert 'id="witness-vkeys">未固定' in body
    finally:
        output = console.stop()
    assert "no witness verifier key pinned" in output and "Traceback" not in output, output
