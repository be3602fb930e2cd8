"""A paged KV cache of fixed capacity with prefix caching, in the manner of vLLM's block manager. Pure.

Capacity is `num_blocks` blocks of `block_size` tokens. A request holds private blocks for the tokens it computed
beyond any shared prefix. A shared prefix (a tenant's system prompt), once computed, lives in cached blocks that
later requests with the same prefix reference instead of recomputing: that is a prefix-cache hit. Cached blocks
nobody references stay until their space is needed (least recently used first); like vLLM, usage counts them
as free.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class PrefixEntry:
    """A computed shared prefix held in cached blocks."""

    blocks: int
    refs: int = 0


@dataclass
class KvCache:
    """Blocks in use per request and per cached prefix; all counts in blocks unless a name says tokens."""

    num_blocks: int
    block_size: int = 16
    private: dict[int, int] = field(default_factory=dict)  # request id -> blocks
    prefixes: OrderedDict[str, PrefixEntry] = field(default_factory=OrderedDict)  # LRU order, oldest first
    _private_total: int = 0
    _cached_total: int = 0
    _referenced_total: int = 0

    @property
    def capacity_tokens(self) -> int:
        """Tokens the cache holds when full."""
        return self.num_blocks * self.block_size

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed for `tokens` tokens."""
        return -(-tokens // self.block_size)

    @property
    def free_blocks(self) -> int:
        """Blocks neither held by a request nor by a referenced prefix (unreferenced cached ones count as free)."""
        return self.num_blocks - self._private_total - self._referenced_total

    @property
    def usage(self) -> float:
        """vLLM's kv_cache_usage_perc: share of blocks in use, 0..1."""
        return 1.0 - self.free_blocks / self.num_blocks if self.num_blocks else 0.0

    def cached_prefix_tokens(self, prefix_id: str | None, prefix_tokens: int, prompt_tokens: int) -> int:
        """Tokens of a prompt found in the prefix cache: whole blocks of its prefix, and never the whole prompt
        (the last token is always computed, to produce the first output)."""
        if prefix_id is None or prefix_id not in self.prefixes:
            return 0
        aligned = min(prefix_tokens, prompt_tokens - 1) // self.block_size * self.block_size
        return min(aligned, self.prefixes[prefix_id].blocks * self.block_size)

    def grow(self, request: int, blocks: int) -> bool:
        """Make request `request` hold `blocks` private blocks (never shrinks); False when there is no room."""
        have = self.private.get(request, 0)
        need = blocks - have
        if need <= 0:
            return True
        if not self._make_room(need):
            return False
        self.private[request] = blocks
        self._private_total += need
        return True

    def release(self, request: int) -> None:
        """Free a request's private blocks (finished, preempted or aborted)."""
        self._private_total -= self.private.pop(request, 0)

    def ref_prefix(self, prefix_id: str) -> None:
        """A request starts using a cached prefix."""
        entry = self.prefixes[prefix_id]
        if entry.refs == 0:
            self._referenced_total += entry.blocks
        entry.refs += 1
        self.prefixes.move_to_end(prefix_id)

    def unref_prefix(self, prefix_id: str) -> None:
        """A request stops using a cached prefix; at zero references it becomes evictable."""
        entry = self.prefixes.get(prefix_id)
        if entry is None or entry.refs == 0:
            return
        entry.refs -= 1
        if entry.refs == 0:
            self._referenced_total -= entry.blocks

    def promote_prefix(self, request: int, prefix_id: str, tokens: int) -> bool:
        """The request computed a shared prefix of `tokens` tokens: its first whole blocks become a cached prefix it
        references. False (nothing changes) when the prefix is already cached or shorter than a block."""
        blocks = tokens // self.block_size
        if prefix_id in self.prefixes or blocks == 0 or self.private.get(request, 0) < blocks:
            return False
        self.private[request] -= blocks
        self._private_total -= blocks
        self.prefixes[prefix_id] = PrefixEntry(blocks, refs=1)
        self._cached_total += blocks
        self._referenced_total += blocks
        return True

    def _make_room(self, need: int) -> bool:
        """Evict unreferenced prefixes (oldest first) until `need` blocks are free of everything."""
        if need > self.free_blocks:
            return False
        untouched = self.num_blocks - self._private_total - self._cached_total
        for prefix_id in list(self.prefixes):
            if untouched >= need:
                break
            entry = self.prefixes[prefix_id]
            if entry.refs == 0:
                del self.prefixes[prefix_id]
                self._cached_total -= entry.blocks
                untouched += entry.blocks
        return untouched >= need

    def clear(self) -> None:
        """Empty the cache (the engine restarted)."""
        self.private.clear()
        self.prefixes.clear()
        self._private_total = self._cached_total = self._referenced_total = 0
