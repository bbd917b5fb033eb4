"""Issue #11 item 1: one identity per intake system and per caseworker, through the real path.

`hedui keys issue` gives a second intake system a certificate of its own (its name in the
subject, role intake) and a profile; its requests carry a caseworker's user id; both are in the
audit entries and `hedui audit search --caller` finds them, by system or by caseworker. Free text
that looks like an ID number is refused, so no ID reaches the log through it."""

from __future__ import annotations

import json

from tests.e2e.conftest import Up


def test_each_intake_system_and_caseworker_is_named_in_the_log(up: Up) -> None:
    work = str(up.workdir.root)
    r = up.cli("keys", "issue", "--workdir", work, "--name", "intake-hangzhou", "--role", "intake")
    assert r.returncode == 0, r.stderr
    profile = up.workdir.root / "intake-hangzhou.toml"
    assert profile.exists()
    _, id_number = up.summary.applicants[20]
    r = up.cli(
        "verify", "--workdir", work, "--profile", str(profile), "--id", id_number,
        "--program", "dibao", "--caseworker", "zhang.wei", "--json", *up.consent_args(id_number),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    request_id = json.loads(r.stdout)["request_id"]
    r = up.cli("audit", "search", "--workdir", work, "--caller", "intake-hangzhou")
    assert r.returncode == 0, r.stderr
    found = [line for line in r.stdout.splitlines() if request_id in line]
    assert len(found) == 2  # the request and its verdict
    assert all("intake-hangzhou" in line for line in found)
    r = up.cli("audit", "search", "--workdir", work, "--caller", "intake-hangzhou/zhang.wei")
    assert sum(request_id in line for line in r.stdout.splitlines()) == 2
    r = up.cli("audit", "search", "--workdir", work, "--caller", "intake-hangzhou/li.na")
    assert request_id not in r.stdout
    # the shared certificate's entries are not this system's
    r = up.cli("audit", "search", "--workdir", work, "--caller", "intake")
    assert request_id not in r.stdout
    # a name in use, a bad name: clear errors
    r = up.cli("keys", "issue", "--workdir", work, "--name", "intake-hangzhou", "--role", "intake")
    assert r.returncode == 1 and "already has a certificate" in r.stderr
    r = up.cli("keys", "issue", "--workdir", work, "--name", "Bad Name", "--role", "intake")
    assert r.returncode == 1 and "not a usable name" in r.stderr


def test_free_text_that_looks_like_an_id_is_refused(up: Up) -> None:
    _, id_number = up.summary.applicants[21]
    for flag in ("--request-id", "--case-number", "--caseworker"):
        r = up.cli(
            "verify", "--workdir", str(up.workdir.root), "--id", id_number, "--program", "dibao",
            *up.consent_args(id_number), flag, f"note {id_number}",
        )  # fmt: skip
        assert r.returncode != 0 and "looks like a resident ID number" in r.stderr, flag
