"""Decoy residents and encrypted selectors (issue #26): a connector is asked about each member
among k - 1 decoy residents, cannot tell them apart, and still answers the members' sum."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from hedui.connectors.errors import ConnectorError
from hedui.connectors.sdk import AnswerRefused, GrantRefused
from hedui.connectors.serve import load_authority_settings, write_authority_config
from hedui.connectors.store import Person, RegisterStore, open_engine
from hedui.connectors.token_authority import AuthoritySettings, TokenAuthority
from hedui.core import grants
from hedui.core.answers import DAMAGED_COUNTED, DECLARED_MAXIMUM
from hedui.core.oprf import ServerKey
from hedui.core.packing import DAMAGED
from hedui.core.selectors import selector_set
from tests.connectors.test_marks import (
    LAYOUT,
    A,
    B,
    C,
    D,
    E,
    _answerer,
    _damage,
    _store,
)
from tests.custodian.test_keeper import AUTHORITY, KEY, logged_bindings

PUB = KEY.public
CONNECTORS = ("hrss", "bank-01", "civil")


def _decrypted_rows(packed: list[bytes], households: int) -> list[dict[str, int]]:
    plain = [KEY.decrypt(PUB.from_bytes(c, PUB.fingerprint)) for c in packed]
    return LAYOUT.unpack(plain, households)


def test_the_answer_is_the_members_sum_whatever_the_decoys_hold(tmp_path: Path) -> None:
    """Households over two ciphertexts of the layout, each asked about A, B, C and D of which
    only some are members: the decrypted totals are the members' rows alone."""
    store = _store(tmp_path / "hrss.db")
    a = _answerer(store)
    rows = {
        A: {"monthly_pension": 151200, "monthly_wage": 1000},
        B: {"monthly_wage": 300000},
        C: {"monthly_pension": 90000},
    }
    n = LAYOUT.per_ciphertext + 2
    households, selectors, expected = [], [], []
    for h in range(n):
        tokens = [A, B, C] + [bytes([200, h, j]) * 8 + bytes(8) for j in range(5)]
        members = {0} if h % 3 == 0 else ({1, 2} if h % 3 == 1 else set())
        sels, at = selector_set(PUB, len(members), len(tokens), _place(h))
        order = sorted(members) + [i for i in range(len(tokens)) if i not in members]
        mine = [b""] * len(tokens)
        for position, i in enumerate(order):
            mine[i] = sels[at[position]]
        households.append(tokens)
        selectors.append(mine)
        want = {"monthly_wage": 0, "monthly_pension": 0, "monthly_unemployment_benefit": 0}
        for i in members:
            for f, v in rows[tokens[i]].items():
                want[f] += v
        expected.append(want)
    r = a.answer("q-decoys", households, LAYOUT, selectors)
    assert len(r.packed) == LAYOUT.ciphertexts(n) == 2
    got = _decrypted_rows(list(r.packed), n)
    assert [{f: g[f] for f in w} for g, w in zip(got, expected, strict=True)] == expected
    assert not r.marked


def _place(position: int) -> int:
    """The first bit of the slots of the household at this position of a batch."""
    return position % LAYOUT.per_ciphertext * LAYOUT.stride


def _selectors(members: int, total: int, position: int = 0) -> list[bytes]:
    """A household's selectors with its ``members`` first: Enc(2^place) for them (its place
    at ``position`` of the batch), Enc(0) after."""
    sels, at = selector_set(PUB, members, total, _place(position))
    return [sels[at[i]] for i in range(total)]


def test_a_damaged_row_counts_only_for_the_household_it_is_a_member_of(tmp_path: Path) -> None:
    """A's pension row fails its seal. The connector cannot tell where A is a member, so it
    withholds nobody: it counts the row under A's selector in each household's damaged-rows slot
    and declares, for each list holding A, that it counted one.
    Where A is a decoy the count is 0 and the other rows are answered; where A is a member it
    is 1 and A's row is left out (the custodian withholds the kind there)."""
    path = tmp_path / "hrss.db"
    a = _answerer(_store(path))
    _damage(path)  # A's pension row fails its seal
    households = [
        [A, *(bytes([9, j]) * 16 for j in range(7))],  # A a decoy
        [B, C, *(bytes([8, j]) * 16 for j in range(6))],  # B and C members, A not asked
        [A, B, *(bytes([7, j]) * 16 for j in range(6))],  # A a member, B a decoy
    ]
    selectors = [_selectors(0, 8, 0), _selectors(8, 8, 1), _selectors(1, 8, 2)]
    r = a.answer("q-damaged", households, LAYOUT, selectors)
    # declared for both lists holding A's row (signed), so the custodian can name hrss
    assert [(m.household, m.cause) for m in r.marked] == [
        (0, DAMAGED_COUNTED),
        (2, DAMAGED_COUNTED),
    ]
    got = _decrypted_rows(list(r.packed), 3)
    assert [g[DAMAGED] for g in got] == [0, 0, 1]
    assert got[0]["monthly_wage"] == 0 and got[0]["monthly_pension"] == 0
    assert (got[1]["monthly_wage"], got[1]["monthly_pension"]) == (300000, 90000)
    assert (got[2]["monthly_wage"], got[2]["monthly_pension"]) == (0, 0)


def test_a_group_whose_rows_exceed_a_declared_maximum_is_marked(tmp_path: Path) -> None:
    """D and E each earn the declared maximum: together they exceed it. The connector cannot
    vouch for a members' sum within the maximum, so it marks the household (the group's rows
    are the same whichever household is asked about: the mark tells nothing of the members)."""
    a = _answerer(_store(tmp_path / "hrss.db"))
    households = [
        [D, E, *(bytes([9, j]) * 16 for j in range(6))],
        [B, *(bytes([8, j]) * 16 for j in range(7))],
    ]
    r = a.answer("q-max", households, LAYOUT, [_selectors(1, 8, 0), _selectors(1, 8, 1)])
    assert [(m.household, m.cause) for m in r.marked] == [(0, DECLARED_MAXIMUM)]
    assert _decrypted_rows(list(r.packed), 2)[1]["monthly_wage"] == 300000


def register(path: Path, sizes: list[int]) -> tuple[RegisterStore, list[list[str]]]:
    """A register of households of these sizes (synthetic ID numbers: the authority only
    evaluates them), and each household's members."""
    store = RegisterStore(open_engine(f"sqlite:///{path}"))
    households, people, n = [], [], 0
    for h, size in enumerate(sizes):
        ids = [f"3301{n + i:014d}" for i in range(size)]
        n += size
        households.append(ids)
        people += [
            Person(
                id_number=i,
                household_id=f"H{h:06d}",
                relation="head" if j == 0 else "child",
                birth_date="1980-01-01",
            )
            for j, i in enumerate(ids)
        ]
    store.replace_all(people)
    return store, households


def authority(
    store: RegisterStore | None, k: int, connectors: tuple[str, ...] = CONNECTORS
) -> TokenAuthority:
    return TokenAuthority(
        ServerKey(b"\x07" + bytes(31)),
        1,
        AUTHORITY,
        AuthoritySettings(connectors, decoys_interactive=k, decoys_campaign=k),
        public=PUB,
        register=store,
    )


def token_of(ta: TokenAuthority, resident: str, cid: str) -> bytes:
    return ta.tokens([resident], "one", 1).own[cid][0]


@pytest.mark.parametrize("k", [2, 4, 8])
def test_a_household_is_asked_about_with_the_other_households_of_its_group(
    k: int, tmp_path: Path
) -> None:
    store, households = register(tmp_path / "r.db", [3, 1, 2, 4, 3, 2, 1, 3] * 10)
    ta = authority(store, k)
    assert ta.groups is not None
    group = ta.groups.group("H000000").households
    others = [h for h in group if h != "H000000"]
    assert len(group) in range(k, 2 * k) and "H000000" in group
    # symmetric: every household of the group has the same group
    for h in others:
        assert ta.groups.group(h).households == group
    got = ta.tokens(households[0], "H000000", k)
    residents = [i for h in group for i in store.members_of_households([h])[h]]
    total = max(grants.PAD, -(-len(residents) // grants.PAD) * grants.PAD)
    assert len(got.selectors) == total
    plain = [KEY.decrypt(PUB.from_bytes(c, PUB.fingerprint)) for c in got.selectors]
    assert sorted(plain) == [0] * (total - 3) + [1] * 3
    for cid in CONNECTORS:
        tokens = got.tokens[cid]
        assert len(tokens) == total and tokens == sorted(tokens)
        assert {token_of(ta, r, cid) for r in residents} <= set(tokens)
        # the members' own tokens carry Enc(1), every other token Enc(0)
        for t, c in zip(tokens, got.selected(cid), strict=True):
            assert KEY.decrypt(PUB.from_bytes(c, PUB.fingerprint)) == (t in got.own[cid])
    # selectors are fresh per query and shared by the connectors of one query
    assert set(got.selected("hrss")) == set(got.selected("civil"))
    # any household of the group is asked about with byte for byte the same tokens (its fakes
    # included: they are the group's), so a connector cannot sort a group's queries
    for other in others:
        theirs = ta.tokens(store.members_of_households([other])[other], other, k)
        assert theirs.tokens == got.tokens


def test_asked_twice_the_same_tokens_and_a_leaver_takes_only_their_own(tmp_path: Path) -> None:
    k = 4
    store, households = register(tmp_path / "r.db", [3, 2, 2, 1] * 20)
    ta = authority(store, k)
    members = households[0]
    first, again = ta.tokens(members, "H000000", k), ta.tokens(members, "H000000", k)
    assert first.tokens == again.tokens  # the same list every time in the epoch
    assert set(first.selectors).isdisjoint(again.selectors)  # the selectors are fresh
    left = ta.tokens(members[:2], "H000000", k)
    for cid in CONNECTORS:
        gone = set(first.tokens[cid]) - set(left.tokens[cid])
        # of the residents, the leaver alone (padding fakes are nobody's)
        assert token_of(ta, members[2], cid) in gone
        residents = {token_of(ta, r, cid) for h in households for r in h}
        assert gone & residents == {token_of(ta, members[2], cid)}


def test_groups_outlive_changes_of_the_register(tmp_path: Path) -> None:
    """A new household joins a group; a household that is gone drops out; the others stay."""
    k = 4
    store, households = register(tmp_path / "r.db", [2] * 40)
    ta = authority(store, k)
    assert ta.groups is not None
    before = {f"H{h:06d}": set(ta.groups.group(f"H{h:06d}").households) for h in range(40)}
    people = [
        Person(id_number=i, household_id=f"H{h:06d}", relation="head", birth_date="1980-01-01")
        for h, ids in enumerate(households)
        if h != 5
        for i in ids
    ] + [
        Person(
            id_number="330100000000999999",
            household_id="NEW",
            relation="head",
            birth_date="1990-01-01",
        )
    ]
    store.replace_all(people)
    again = authority(store, k)  # a restarted registry reads the recorded groups
    assert again.groups is not None
    joined = set(again.groups.group("NEW").households)
    assert "NEW" in joined and len(joined) >= k
    for h, group in before.items():
        if h == "H000005":
            continue
        now = set(again.groups.group(h).households)
        # a group only grows (a leaver's group merged into another), never loses a household
        # that is still there
        assert group - {"H000005"} <= now and len(now) >= k


def test_under_churn_every_group_keeps_k_households(tmp_path: Path) -> None:
    """Found in review: households leaving shrank groups to one, and a new household placed by
    its own query was alone in its first list. Five rounds replacing a fifth of the register:
    after each, every household's group has k to 2k - 1 households, and a new household's group
    holds it before it is ever asked about."""
    import random

    k = 4
    rng = random.Random(3)
    store, _ = register(tmp_path / "r.db", [1] * 40)
    alive = [f"H{h:06d}" for h in range(40)]
    serial = 1000
    for _ in range(5):
        gone = set(rng.sample(alive, 8))
        alive = [h for h in alive if h not in gone]
        for _ in range(8):
            alive.append(f"N{serial:06d}")
            serial += 1
        store.replace_all(
            [
                Person(
                    id_number=f"3301{i:014d}",
                    household_id=h,
                    relation="head",
                    birth_date="1980-01-01",
                )
                for i, h in enumerate(alive)
            ]
        )
        ta = authority(store, k)  # the registry reads the register again
        assert ta.groups is not None
        groups = {ta.groups.group(h).households for h in alive}
        assert all(k <= len(g) < 2 * k for g in groups), sorted(map(len, groups))
        assert sorted(h for g in groups for h in g) == sorted(alive)


def test_a_k_per_path_must_be_the_same_where_not_1_and_groups_outlive_an_epoch(
    tmp_path: Path,
) -> None:
    """Found in review: a k per path, and a new shuffle per token epoch, each let a connector
    intersect two groups down to one household."""
    store, _ = register(tmp_path / "r.db", [2] * 64)
    with pytest.raises(ConnectorError, match="the same on both paths"):
        TokenAuthority(
            ServerKey(b"\x07" + bytes(31)),
            1,
            AUTHORITY,
            AuthoritySettings(CONNECTORS, decoys_interactive=2, decoys_campaign=4),
            public=PUB,
            register=store,
        )
    ta = authority(store, 4)
    other_epoch = TokenAuthority(
        ServerKey(b"\x09" + bytes(31)),
        2,
        AUTHORITY,
        AuthoritySettings(CONNECTORS, decoys_interactive=4, decoys_campaign=1),
        public=PUB,
        register=store,
    )
    assert ta.groups is not None and other_epoch.groups is not None
    assert other_epoch.groups.group("H000003") == ta.groups.group("H000003")


def test_without_the_custodians_key_decoys_are_refused_with_what_to_do(tmp_path: Path) -> None:
    store, _ = register(tmp_path / "r.db", [1, 2])
    with pytest.raises(ConnectorError, match=r"custodian/paillier\.pub"):
        TokenAuthority(
            ServerKey(b"\x07" + bytes(31)),
            1,
            AUTHORITY,
            AuthoritySettings(CONNECTORS, decoys_interactive=4, decoys_campaign=4),
            register=store,
        )


def test_a_batch_mixing_households_with_and_without_selectors_is_answered(
    tmp_path: Path,
) -> None:
    """A run may hold households of two paths (a k per path): a household asked without
    selectors counts every token it holds, one with selectors its members' only."""
    a = _answerer(_store(tmp_path / "hrss.db"))
    fakes = [bytes([7, j]) * 16 for j in range(6)]
    households = [[A, B, *fakes], [B, C, *fakes]]
    mine = _selectors(1, 8, 1)  # token i at position i: B the member, household 1 of the batch
    r = a.answer("q-mixed", households, LAYOUT, [[], mine])
    got = _decrypted_rows(list(r.packed), 2)
    assert got[0]["monthly_wage"] == 1000 + 300000 and got[0]["monthly_pension"] == 151200
    assert got[1]["monthly_wage"] == 300000 and got[1]["monthly_pension"] == 0


def test_a_selector_that_is_no_ciphertext_of_the_key_is_refused(tmp_path: Path) -> None:
    a = _answerer(_store(tmp_path / "hrss.db"))
    bad = PUB.n.to_bytes(PUB.ciphertext_bytes, "big")  # shares its factors with n
    with pytest.raises(AnswerRefused, match="not a ciphertext"):
        a.answer("q-bad", [[A, *(bytes([3, j]) * 16 for j in range(7))]], LAYOUT, [[bad] * 8])


def test_a_grant_placing_selectors_for_another_layout_is_refused(tmp_path: Path) -> None:
    """Selectors made for other household slots would land a member's rows in a neighbour's
    slots: the connector refuses a grant whose placement is not its query layout's, before
    counting the query id as answered."""
    a = _answerer(_store(tmp_path / "hrss.db"))
    tokens = [[A, *(bytes([3, j]) * 16 for j in range(7))]]
    sels = [_selectors(1, 8)]
    digest = grants.batch_digest(tokens, sels)
    shape = (LAYOUT.stride, LAYOUT.per_ciphertext)

    def grant(placement: tuple[int, int]) -> grants.Grant:
        return grants.issue(
            AUTHORITY,
            query_id="q-placed",
            epoch=1,
            households=1,
            issued_unix_ms=int(time.time() * 1000),
            digests={"hrss": digest},
            bindings=logged_bindings("q-placed", 1),
            placement=placement,
        )

    with pytest.raises(GrantRefused, match="made for households of 999 bits"):
        a.check_grant("q-placed", grant((999, 2)).for_connectors(), digest, 1, shape)
    a.check_grant("q-placed", grant(shape).for_connectors(), digest, 1, shape)


def test_a_member_selects_at_its_households_place_in_the_batch(tmp_path: Path) -> None:
    """The authority makes a member's selector Enc(2^place) for the household's position in
    the grant's batch, and the grant names the placement (one stride for every kind)."""
    store, households = register(tmp_path / "register.db", [2, 1, 3, 2, 1, 2, 2, 1])
    ta = authority(store, 4)
    stride, per = ta.placement
    assert (stride, per) == (LAYOUT.stride, LAYOUT.per_ciphertext)  # hrss is the widest here
    for position in (0, 1, per + 2):
        t = ta.tokens(households[2], "H000002", 4, position)
        plain = sorted(KEY.decrypt(PUB.from_bytes(s, PUB.fingerprint)) for s in t.selectors)
        place = position % per * stride
        assert plain == [0] * (len(plain) - 3) + [1 << place] * 3
    grant = ta.grant("q-place", [t], logged_bindings("q-place", 1))
    assert grant.placement == (stride, per)
    plain_grant = ta.grant(
        "q-plain", [ta.tokens(households[0], "H000000", 1)], logged_bindings("q-plain", 1)
    )
    assert plain_grant.placement == (0, 0)


def test_an_authority_file_of_a_release_before_decoys_keeps_them_off(tmp_path: Path) -> None:
    """A file written before decoys has no k: read as 1 (the operator turns them on), while a
    file written now has the default, 4."""
    old = tmp_path / "old.toml"
    old.write_text('connectors = ["hrss", "bank-01"]\n', encoding="utf-8")
    settings = load_authority_settings(old)
    assert (settings.decoys_interactive, settings.decoys_campaign) == (1, 1)
    new = tmp_path / "new.toml"
    write_authority_config(new, ["hrss", "bank-01"], {})
    settings = load_authority_settings(new)
    assert (settings.decoys_interactive, settings.decoys_campaign) == (4, 4)


def test_selectors_in_a_layout_without_the_damaged_rows_slot_are_refused(tmp_path: Path) -> None:
    """A layout of a service older than the slot: a damaged row could only mark every household
    whose list holds it (decoys included), so the query is refused instead."""
    a = _answerer(_store(tmp_path / "hrss.db"))
    old = dataclasses.replace(LAYOUT, slots=LAYOUT.fields)
    with pytest.raises(AnswerRefused, match="no damaged_rows slot"):
        a.answer("q-old", [[A, *(bytes([3, j]) * 16 for j in range(7))]], old, [_selectors(1, 8)])
