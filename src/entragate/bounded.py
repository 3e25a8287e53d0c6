"""Memory bounds for the edge's caches: a count of entries *and* an estimate of the bytes
they hold, because one cached entry may hold 100 bytes or 30 KB (a user in 200 groups).

A Workers isolate has 128 MB for everything: the JS heap, Pyodide's runtime and the Python
heap, and each request in flight. The caches together stay under ~25 MB (docs/CONFIGURATION.md,
"Fixed limits"); each states its own budget where it is defined.

Estimates are taken once, when an entry is stored, from the lengths of the strings it holds,
with CPython's 64-bit object sizes (Pyodide is 32-bit, so its objects are smaller and the
estimate errs high). tests/host/test_memory.py compares them with tracemalloc.
"""

# A str object: 49 bytes of header (CPython 3.11, 64-bit, ASCII; 41 in 3.12+) plus one per
# character, rounded up by the allocator; 64 covers that and the reference holding it.
STRING_OVERHEAD_BYTES = 64
# A character costs 1 byte in an ASCII/Latin-1 str, up to 4 in others.
MAX_BYTES_PER_CHARACTER = 4


def strings_bytes(strings: tuple) -> int:
    """Estimated bytes held by a tuple of str (each a separate object)."""
    characters = sum(map(len, strings))
    if not all(map(str.isascii, strings)):  # rare: names in other scripts
        characters += (MAX_BYTES_PER_CHARACTER - 1) * sum(len(text) for text in strings if not text.isascii())
    return characters + len(strings) * STRING_OVERHEAD_BYTES


class BoundedMap:
    """An insertion-ordered map of at most `max_entries` entries whose estimated sizes (each
    value's `size`, in bytes) add up to at most `max_bytes`; the oldest entries leave first
    to make room. `get` is the dict's own method, so a lookup costs nothing extra."""

    __slots__ = ("get", "_entries", "max_entries", "max_bytes", "bytes")

    def __init__(self, max_entries: int, max_bytes: int):
        self._entries: dict = {}
        self.get = self._entries.get
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def __iter__(self):
        return iter(self._entries)

    def put(self, key, value) -> None:
        """Store `value` (evicting the oldest entries as needed); one larger than the whole
        budget is not stored at all."""
        self.discard(key)  # two requests may fill the same key: count it once
        size = value.size
        if size > self.max_bytes:
            return
        entries = self._entries
        while entries and (len(entries) >= self.max_entries or self.bytes + size > self.max_bytes):
            self.bytes -= entries.pop(next(iter(entries))).size
        entries[key] = value
        self.bytes += size

    def discard(self, key) -> None:
        value = self._entries.pop(key, None)
        if value is not None:
            self.bytes -= value.size
