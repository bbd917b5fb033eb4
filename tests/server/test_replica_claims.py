"""Claims shared by replicas on one PostgreSQL database (issue #12 item 4): a replica settles
only the claims of a process that is gone, and notices when its own owner lock is lost."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from hedui.server.requests import RequestBook


@pytest.mark.postgres
def test_only_a_gone_replicas_claims_are_adopted_and_a_lost_lock_is_noticed(pg_url: str) -> None:
    a, b = RequestBook(pg_url), RequestBook(pg_url)
    try:
        assert a.claim(b"k" * 32, b"x" * 32) is None
        assert b.open_claims() == []  # a lives: its claim is not b's to settle
        assert a.holds_its_lock() and b.holds_its_lock()
        assert a._life is not None
        pid = a._life.execute(text("SELECT pg_backend_pid()")).scalar()
        a._life.commit()
        admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:  # what a database restart does to a's connection
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        admin.dispose()
        assert not a.holds_its_lock()  # a stops (server/app.Settler) …
        (adopted,) = b.open_claims()  # … and b may now settle its claim, once
        assert adopted.request_key == b"k" * 32
        assert b.open_claims() == []
    finally:
        a.close()
        b.close()
