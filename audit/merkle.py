"""RFC 6962 / RFC 9162 Merkle tree hashing, proof generation and proof verification.

Generation works over a ``SubtreeHash`` callable, ``subtree_hash(start, end)``, that answers the
hash of the complete subtree over leaves ``[start, end)``. It is only ever called for aligned
complete subtrees (``end - start`` a power of two and ``start`` a multiple of it; a single leaf
is ``(i, i + 1)``), so a store that keeps those hashes serves a root or a proof with O(log n)
reads. ``MemoryTree`` is the in-memory store.

Verification is ported from the RFC 9162 text (sections 2.1.3.2 and 2.1.4.2), with the two
rules the transparency-dev reference library adds: every hash is exactly 32 bytes, and a
consistency proof from the empty tree (``size1 == 0``) is rejected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from hedui.audit.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    """MTH of a one-leaf tree: SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) per RFC 6962 section 2.1, from the leaf hashes."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


# --- generation --------------------------------------------------------------------------------


def _range_hash(start: int, end: int, subtree_hash: SubtreeHash) -> bytes:
    """MTH of leaves ``[start, end)``, as complete subtrees folded right to left."""
    n = end - start
    if n & (n - 1) == 0:
        return subtree_hash(start, end)
    k = _split(n)
    return node_hash(subtree_hash(start, start + k), _range_hash(start + k, end, subtree_hash))


def tree_root(size: int, subtree_hash: SubtreeHash) -> bytes:
    """The root of the tree of the first ``size`` leaves."""
    if size < 0:
        raise ValueError(f"negative tree size {size}")
    return EMPTY_ROOT if size == 0 else _range_hash(0, size, subtree_hash)


def _path(m: int, start: int, end: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """PATH(m, D[start:end]) of RFC 6962 section 2.1.1; ``m`` is relative to ``start``."""
    n = end - start
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [
            *_path(m, start, start + k, subtree_hash),
            _range_hash(start + k, end, subtree_hash),
        ]
    return [*_path(m - k, start + k, end, subtree_hash), subtree_hash(start, start + k)]


def inclusion_proof(index: int, size: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of size ``size``."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} out of range for tree size {size}")
    return _path(index, 0, size, subtree_hash)


def _subproof(
    m: int, start: int, end: int, complete: bool, subtree_hash: SubtreeHash
) -> list[bytes]:
    """SUBPROOF(m, D[start:end], b) of RFC 6962 section 2.1.2; ``m`` is relative to ``start``."""
    n = end - start
    if m == n:
        return [] if complete else [_range_hash(start, end, subtree_hash)]
    k = _split(n)
    if m <= k:
        left = _subproof(m, start, start + k, complete, subtree_hash)
        return [*left, _range_hash(start + k, end, subtree_hash)]
    right = _subproof(m - k, start + k, end, False, subtree_hash)
    return [*right, subtree_hash(start, start + k)]


def consistency_proof(size1: int, size2: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """The proof that the tree of size ``size2`` extends the tree of size ``size1``."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    return _subproof(size1, 0, size2, True, subtree_hash)


class MemoryTree:
    """An append-only tree in memory that keeps the hash of every complete subtree."""

    def __init__(self) -> None:
        # _levels[h][i] is the hash of the complete subtree over leaves [i * 2**h, (i+1) * 2**h).
        self._levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def __len__(self) -> int:
        return self.size

    def append(self, entry: bytes) -> int:
        """Append a log entry; answers its leaf index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def leaf_hashes(self) -> list[bytes]:
        """Every leaf hash, in order."""
        return list(self._levels[0])

    def append_leaf_hash(self, hash_: bytes) -> int:
        if len(hash_) != HASH_SIZE:
            raise ValueError(f"leaf hash has {len(hash_)} bytes, want {HASH_SIZE}")
        index = self.size
        self._levels[0].append(hash_)
        level, i = 0, index
        while i & 1:  # a right child completes its parent
            hash_ = node_hash(self._levels[level][i - 1], hash_)
            level, i = level + 1, i >> 1
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(hash_)
        return index

    def subtree_hash(self, start: int, end: int) -> bytes:
        width = end - start
        if width <= 0 or width & (width - 1) or start % width or end > self.size:
            raise ValueError(f"[{start}, {end}) is not a complete subtree of a tree of {self.size}")
        level = width.bit_length() - 1
        return self._levels[level][start >> level]

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} out of range, the tree has {self.size} leaves")
        return size

    def root(self, size: int | None = None) -> bytes:
        return tree_root(self._size(size), self.subtree_hash)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self._size(size), self.subtree_hash)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(size1, self._size(size2), self.subtree_hash)


# --- verification ------------------------------------------------------------------------------


def _check_hashes(proof: Sequence[bytes], **named: bytes) -> None:
    for name, value in named.items():
        if len(value) != HASH_SIZE:
            what = name.replace("_", " ")
            raise VerificationError(f"{what} has {len(value)} bytes, want {HASH_SIZE}")
    for i, node in enumerate(proof):
        if len(node) != HASH_SIZE:
            raise VerificationError(f"proof node {i} has {len(node)} bytes, want {HASH_SIZE}")


def _decompose(index: int, size: int) -> tuple[int, int]:
    """(inner, border): the inclusion proof of ``index`` has ``inner + border`` nodes."""
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves and ``root``."""
    _check_hashes(proof, leaf_hash=leaf_hash, root=root)
    if not 0 <= index < size:
        raise VerificationError(f"leaf index {index} out of range for tree size {size}")
    want = sum(_decompose(index, size))
    if len(proof) != want:
        raise VerificationError(f"wrong proof size {len(proof)}, want {want}")

    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise VerificationError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("inclusion proof too short")
    if r != root:
        raise VerificationError(f"root mismatch at size {size}: computed {r.hex()}")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` leaves and ``root2`` extends ``size1`` and ``root1``."""
    _check_hashes(proof, root1=root1, root2=root2)
    if size1 < 0 or size2 < 0:
        raise VerificationError(f"negative tree size in {size1} -> {size2}")
    if size1 > size2:
        raise VerificationError(f"size1 {size1} > size2 {size2}")
    if size1 == 0:
        raise VerificationError("consistency proof from the empty tree (size1 = 0) is meaningless")
    if size1 == size2:
        if proof:
            raise VerificationError(f"wrong proof size {len(proof)}, want 0")
        if root1 != root2:
            raise VerificationError(f"root mismatch at size {size1}")
        return

    inner, border = _decompose(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros of size1
    power_of_two = size1 == 1 << shift
    want = inner - shift + border + (0 if power_of_two else 1)
    if len(proof) != want:
        raise VerificationError(f"wrong proof size {len(proof)}, want {want}")

    path = [root1, *proof] if power_of_two else list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("consistency proof too short")
    if fr != root1:
        raise VerificationError(f"root mismatch at size {size1}: computed {fr.hex()}")
    if sr != root2:
        raise VerificationError(f"root mismatch at size {size2}: computed {sr.hex()}")
