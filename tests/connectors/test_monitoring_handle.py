"""The registry's monitoring handle (issue #13): it names the applicant until its date, only for
the registry that sealed it; an altered, foreign or expired handle is refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hedui.connectors.token_authority import AuthoritySettings, HandleRefused, TokenAuthority
from hedui.core.keystore import KeyDir
from hedui.core.resident_id import make

DAY = dt.date(2026, 11, 24)
ID = make("330106", dt.date(1970, 1, 1), 11).value


def _authority(tmp: Path) -> TokenAuthority:
    k = KeyDir(tmp)
    k.init(["civil"], paillier_bits=1024)
    return TokenAuthority(k.oprf_key(1), 1, k.grant_signing_key(), AuthoritySettings(("civil",)))


def test_handle_round_trip_and_refusals(tmp_path: Path) -> None:
    ta = _authority(tmp_path / "a")
    handle = ta.monitoring_handle(ID, DAY + dt.timedelta(days=30))
    assert ID.encode() not in handle
    assert ta.open_handle(handle, DAY) == ID
    assert ta.open_handle(handle, DAY + dt.timedelta(days=30)) == ID  # its last day
    with pytest.raises(HandleRefused, match="ended on"):
        ta.open_handle(handle, DAY + dt.timedelta(days=31))
    altered = handle[:-1] + bytes([handle[-1] ^ 1])
    with pytest.raises(HandleRefused, match="not one this registry issued"):
        ta.open_handle(altered, DAY)
    other = _authority(tmp_path / "b")
    with pytest.raises(HandleRefused, match="not one this registry issued"):
        other.open_handle(handle, DAY)
