"""Decoy households (issue #26): a connector cannot tell which household is being checked.

The token authority partitions the register into groups of at least k households (a keyed
shuffle of the households, cut into runs of k; the last short run joins the one before it). A
query about any household of a group names the members of every household of the group, with
the same tokens and the same padding fakes whichever household it is about, each token with its
encrypted selector (:mod:`hedui.core.selectors`): Enc(2^place) for the members of the household
asked about (place: the first bit of its slots in the batch; 1 for the first household), Enc(0)
for the others. So every query of a group looks the same to a connector, and every
resident of a group appears as often as any other:

- the decoys are whole households, living together as real households do (random residents
  would be told apart by co-residence);
- every resident of a group appears exactly as often as every other (decoys drawn anew for each
  member appear less often than members, who are also drawn as others' decoys: found measuring
  the per-member design first);
- a household asked twice shows the same tokens, and so does any other household of its group;
- a member who leaves takes only their own token with them, and which of the k households they
  left is exactly what the connector cannot tell.

One partition serves every token epoch: its key is derived from the token authority's grant key,
which a token-epoch rotation keeps (a new shuffle per epoch would let a connector intersect a
household's two groups down to the household). It is recorded in the registry's database
(:class:`~hedui.connectors.store.DecoyGroup`) and kept as the register changes, never from a
query: at each read of the register (at start, every :data:`REFRESH_SECONDS`, and when a query
names a household the partition does not hold) every new household joins the group its keyed
hash picks; a group that has fallen below k households (households gone) is merged into another,
and one that has grown to 2k is split in two in its keyed order. A group only ever grows, or
splits into halves of at least k: a household's lists over time intersect in at least k
households.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hedui.connectors.store import RegisterStore

log = logging.getLogger("hedui.connectors.decoys")

REFRESH_SECONDS = 600.0  # how long the groups are kept in memory before the register is read again
PARTITION = 0  # the partition's row key (one for every token epoch: see the module's docstring)
MAX_RESIDENTS = 120  # a group's residents a query names at most (a connector takes 128 tokens)


@dataclass(frozen=True)
class Group:
    """The households a query about one of them names: its name (for the padding fakes) and
    its households, in the group's keyed order."""

    name: str
    households: tuple[str, ...]


class DecoyGroups:
    def __init__(
        self,
        store: RegisterStore,
        key: bytes,
        k: int,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._key = key
        self._k = k
        self._now = now
        self._lock = threading.Lock()
        self._read_at = -REFRESH_SECONDS
        self._group_of: dict[str, int] = {}
        self._members: dict[int, list[str]] = {}  # group -> its households of the register

    def _rank(self, household_id: str) -> bytes:
        return hmac.digest(self._key, household_id.encode(), "sha256")

    def _read(self) -> None:
        """Read the register and the recorded partition; cut the partition if there is none,
        place every new household, merge the groups below k, split those at 2k, record the
        changes."""
        k = self._k
        known = self._store.decoy_groups(PARTITION, k)
        households = self._store.all_household_ids()
        if not known:
            order = sorted(households, key=self._rank)
            count = max(1, len(order) // k)
            self._store.add_decoy_groups(
                PARTITION, k, {h: min(i // k, count - 1) for i, h in enumerate(order)}
            )
            known = self._store.decoy_groups(PARTITION, k)  # another replica's rows win
        count = max(known.values(), default=-1) + 1 or 1
        new = {
            h: int.from_bytes(self._rank(h)[:8], "big") % count
            for h in households
            if h not in known
        }
        if new:
            self._store.add_decoy_groups(PARTITION, k, new)
            known = self._store.decoy_groups(PARTITION, k)
        present = set(households)
        moves = self._balanced(_by_group(known, present), max(known.values(), default=0) + 1)
        if moves:
            self._store.move_decoy_groups(PARTITION, k, moves)
            log.info("decoy groups: %d household(s) merged or split into new groups", len(moves))
            known.update(moves)
        self._group_of = known
        self._members = {
            g: sorted(hs, key=self._rank) for g, hs in _by_group(known, present).items()
        }
        self._read_at = self._now()

    def _balanced(self, members: dict[int, list[str]], next_group: int) -> dict[str, int]:
        """The moves that leave every group with k to 2k - 1 households present: a group below
        k joins the smallest other group (repeatedly, in group order); a group of 2k or more
        is split into halves in its keyed order."""
        k = self._k
        moves: dict[str, int] = {}
        groups = {g: list(hs) for g, hs in members.items() if hs}
        for g in sorted(groups):
            if g in groups and len(groups[g]) < k and len(groups) > 1:
                into = min((x for x in groups if x != g), key=lambda x: (len(groups[x]), x))
                for h in groups.pop(g):
                    moves[h] = into
                    groups[into].append(h)
        for g in sorted(groups):
            while len(groups[g]) >= 2 * k:
                order = sorted(groups[g], key=self._rank)
                half = order[len(order) // 2 :]
                groups[g] = order[: len(order) // 2]
                groups[next_group] = half
                for h in half:
                    moves[h] = next_group
                next_group += 1
        return moves

    def group(self, household_id: str) -> Group:
        """The group a query about this household names (read again first when the
        partition does not hold it, so that its group-mates' lists hold it too)."""
        with self._lock:
            stale = self._now() - self._read_at >= REFRESH_SECONDS
            g = self._group_of.get(household_id)
            if stale or g is None or household_id not in self._members.get(g, ()):
                self._read()
                g = self._group_of.get(household_id)
            chosen = tuple(self._members.get(g, [])) if g is not None else ()
        if household_id not in chosen:  # not in the register: only itself
            return Group(f"alone:{household_id}", (household_id,))
        return Group(f"{self._k}:{g}", chosen)

    def residents(self, household_id: str) -> tuple[Group, list[str]]:
        """The group, and the members of its other households (the household's decoys), the
        largest households left out when the group's residents would exceed
        :data:`MAX_RESIDENTS` (a group holding a collective household, 集体户)."""
        group = self.group(household_id)
        others = [h for h in group.households if h != household_id]
        if not others:
            return group, []
        members = self._store.members_of_households([household_id, *others])
        budget = MAX_RESIDENTS - len(members[household_id])
        out: list[str] = []
        for h in sorted(others, key=lambda x: (len(members[x]), self._rank(x))):
            if len(members[h]) > budget:
                continue
            budget -= len(members[h])
            out += members[h]
        return group, out


def _by_group(group_of: dict[str, int], present: set[str]) -> dict[int, list[str]]:
    """group -> its households still in the register."""
    out: dict[int, list[str]] = {}
    for h, g in group_of.items():
        if h in present:
            out.setdefault(g, []).append(h)
    return out
