"""Decoy households (issue #26): a connector cannot tell which household is being checked.

The token authority partitions the register into groups of households (a keyed shuffle of the
households, cut into runs of k; the last short run joins the one before it). A query about any
household of a group names the members of every household of the group, with the same tokens
and the same padding fakes whichever household it is about, each token with its encrypted
selector (:mod:`hedui.core.selectors`): Enc(1) for the members of the household asked about,
Enc(0) for the others. So every query of a group looks the same to a connector, and every
resident of a group appears as often as any other:

- the decoys are whole households, living together as real households do (random residents
  would be told apart by co-residence);
- every resident of a group appears exactly as often as every other (decoys drawn anew for each
  member appear less often than members, who are also drawn as others' decoys: found measuring
  the per-member design first);
- a household asked twice shows the same tokens, and so does any other household of its group;
- a member who leaves takes only their own token with them, and which of the k households they
  left is exactly what the connector cannot tell.

One partition serves every path and every token epoch: it is cut for the largest k configured
(``k_max``) under a key derived from the token authority's grant key (which a token-epoch rotation
keeps), and a smaller k splits each group into runs of that k, in the same keyed order, so
intersecting a household's lists of two paths or two epochs leaves a group of the smaller k,
never the household. The partition is recorded in the registry's database
(:class:`~hedui.connectors.store.DecoyGroup`): a household that appears later joins the group its
keyed hash picks (the next one with room when that has 2·k_max − 1 households already), a household
that is gone drops out of its group.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hedui.connectors.store import RegisterStore

REFRESH_SECONDS = 600.0  # how long the groups are kept in memory before the register is read again
PARTITION = 0  # the partition's row key (one for every epoch: see the module's docstring)


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
        k_max: int,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._key = key
        self._k = k_max
        self._now = now
        self._lock = threading.Lock()
        self._read_at = -REFRESH_SECONDS
        self._group_of: dict[str, int] = {}
        self._members: dict[int, list[str]] = {}  # group -> its households of the register

    def _rank(self, household_id: str) -> bytes:
        return hmac.digest(self._key, household_id.encode(), "sha256")

    def _read(self) -> None:
        """The recorded partition, cut first if there is none, with every household of the
        register that has no group yet placed (the whole register read: at start and every
        :data:`REFRESH_SECONDS`)."""
        k = self._k
        known = self._store.decoy_groups(PARTITION, k)
        households = self._store.all_household_ids()
        if not known:
            order = sorted(households, key=self._rank)
            groups = max(1, len(order) // k)
            new = {h: min(i // k, groups - 1) for i, h in enumerate(order)}
            self._store.add_decoy_groups(PARTITION, k, new)
            known = self._store.decoy_groups(PARTITION, k)  # another replica's rows win
        present = set(households)
        self._group_of = dict(known)
        self._members = {}
        for h, g in known.items():
            if h in present:
                self._members.setdefault(g, []).append(h)
        for h in households:
            if h not in self._group_of:
                self._place(h)
        self._read_at = self._now()

    def _place(self, household_id: str) -> None:
        """A household the partition does not hold joins the group its keyed hash picks, or
        the next with room; one row recorded, nothing else read."""
        groups = max(self._members, default=-1) + 1 or 1
        g = int.from_bytes(self._rank(household_id)[:8], "big") % groups
        for _ in range(groups):
            if len(self._members.get(g, [])) < 2 * self._k - 1:  # one run of k_max at most
                break
            g = (g + 1) % groups
        else:
            g = groups  # every group is full: a new one
        self._store.add_decoy_groups(PARTITION, self._k, {household_id: g})
        g = self._store.decoy_groups_of(PARTITION, self._k, [household_id]).get(household_id, g)
        self._group_of[household_id] = g
        self._members.setdefault(g, []).append(household_id)

    def group(self, household_id: str, k: int) -> Group:
        """The group of ``k`` households a query about this one names (itself alone when
        k = 1): a run of k in its k_max group, in the group's keyed order."""
        if k <= 1:
            return Group(f"alone:{household_id}", (household_id,))
        k = min(k, self._k)
        with self._lock:
            if self._now() - self._read_at >= REFRESH_SECONDS:
                self._read()
            if household_id not in self._group_of:
                self._place(household_id)
            g = self._group_of[household_id]
            members = sorted(self._members.get(g, [household_id]), key=self._rank)
        if household_id not in members:  # gone from the register since the last read
            members = sorted([*members, household_id], key=self._rank)
        runs = max(1, len(members) // k)
        run = min(members.index(household_id) // k, runs - 1)
        chosen = members[run * k :] if run == runs - 1 else members[run * k : (run + 1) * k]
        return Group(f"{k}:{g}:{run}", tuple(chosen))

    def residents(self, household_id: str, k: int) -> tuple[Group, list[str]]:
        """The group, and the members of its other households: the household's decoys."""
        group = self.group(household_id, k)
        others = [h for h in group.households if h != household_id]
        if not others:
            return group, []
        members = self._store.members_of_households(others)
        return group, [i for h in others for i in members[h]]
