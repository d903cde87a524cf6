"""Which endpoint recently served which prompt prefix: an approximate, bounded index.

The way llm-d's approximate prefix-cache scorer guesses at model servers' KV caches without asking
them: a prompt is cut into blocks of `block_chars` characters and each block is hashed together with
the hash before it, so one hash stands for the whole prompt up to the end of its block. After a
pick, the blocks of the prompt are recorded against the endpoint it went to; a later prompt that
shares its first N blocks with it probably finds those N blocks' worth of KV cache there.

Trade-off: characters are not tokens and the index never hears about evictions, so it is a guess;
it is bounded (`capacity` blocks, least recently used dropped first; `per_block` endpoints per
block; only the first `max_blocks` blocks of a prompt), so a guess that has gone stale ages out.
Fails soft: a wrong guess costs one prefill, which a least-loaded pick would have paid anyway.
"""

from __future__ import annotations

from collections.abc import Collection


class PrefixIndex:
    def __init__(
        self, block_chars: int = 64, max_blocks: int = 256, capacity: int = 65_536, per_block: int = 4
    ) -> None:
        self.block_chars = block_chars
        self.max_blocks = max_blocks
        self.capacity = capacity
        self.per_block = per_block
        # block hash -> endpoint ids, most recent last; a dict keeps insertion order, so
        # re-inserting a block makes it the most recently used and the first key is the oldest
        self._blocks: dict[int, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def hashes(self, text: str) -> list[int]:
        """The chained hashes of the prompt's whole blocks (a partial last block is left out)."""
        size = self.block_chars
        count = min(len(text) // size, self.max_blocks)
        found, previous = [], 0
        for start in range(0, count * size, size):
            previous = hash((previous, text[start : start + size]))
            found.append(previous)
        return found

    def matched(self, hashes: list[int], ids: Collection[str]) -> dict[str, int]:
        """For each of `ids` that holds any, how many of the leading blocks it holds."""
        counts: dict[str, int] = {}
        alive = set(ids)
        for depth, block in enumerate(hashes, 1):
            holders = self._blocks.get(block)
            if holders is None:
                break
            alive.intersection_update(holders)
            if not alive:
                break
            for endpoint in alive:
                counts[endpoint] = depth
        return counts

    def record(self, hashes: list[int], endpoint: str) -> None:
        """`endpoint` now holds these blocks (it was just sent the prompt)."""
        blocks = self._blocks
        for block in hashes:
            holders = blocks.pop(block, ())
            if endpoint in holders:
                holders = tuple(e for e in holders if e != endpoint)
            blocks[block] = (*holders[-(self.per_block - 1) :], endpoint) if self.per_block > 1 else (endpoint,)
        while len(blocks) > self.capacity:
            del blocks[next(iter(blocks))]

    def forget(self, keep: Collection[str]) -> None:
        """Drop every endpoint but `keep` (those still in the view); blocks left with nobody go."""
        for block, holders in list(self._blocks.items()):
            kept = tuple(e for e in holders if e in keep)
            if not kept:
                del self._blocks[block]
            elif len(kept) != len(holders):
                self._blocks[block] = kept
