"""Pure planning: how many keys go in each chunk, and chunks into arrays.

Keys are numbered 0..n-1 in primary-key order when they are recorded (see
`ledger`), so a chunk is just a range of those numbers: planning needs only the
count, never the keys themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

MAX_DEFAULT_CHUNK = 1000  # keys; a default chunk never holds more
DEFAULT_TASKS = 100  # what the default aims for on a cluster


@dataclass(frozen=True, kw_only=True)
class Chunk:
    chunk: int  # number within the run, unique across attempts
    lo: int  # first key number
    hi: int  # one past the last key number

    @property
    def keys(self) -> int:
        return self.hi - self.lo


def chunk_size(n_keys: int, *, size: int | None = None, tasks: int | None = None,
               parallel_default: int | None = None) -> int:
    """Keys per chunk for `n_keys`.

    An explicit `size` or `tasks` wins. Otherwise a cluster run aims for about
    DEFAULT_TASKS tasks, and a local run for one task per parallel slot
    (`parallel_default`), never more than MAX_DEFAULT_CHUNK keys per chunk.
    """
    if n_keys <= 0:
        return 1
    if size:
        return size
    if tasks:
        return math.ceil(n_keys / tasks)
    target = parallel_default or DEFAULT_TASKS
    return max(1, min(MAX_DEFAULT_CHUNK, math.ceil(n_keys / target)))


def split(n_keys: int, size: int, first_chunk: int = 0, first_key: int = 0) -> list[Chunk]:
    """`n_keys` keys in chunks of at most `size`, as even as possible."""
    if n_keys <= 0:
        return []
    count = math.ceil(n_keys / size)
    base, extra = divmod(n_keys, count)
    chunks = []
    lo = first_key
    for i in range(count):
        hi = lo + base + (1 if i < extra else 0)
        chunks.append(Chunk(chunk=first_chunk + i, lo=lo, hi=hi))
        lo = hi
    return chunks


_C = TypeVar("_C")  # a planned chunk or its ledger record


def arrays(chunks: Sequence[_C], max_array_size: int | None) -> list[list[_C]]:
    """Chunks grouped into Slurm arrays no larger than the cluster allows."""
    if not chunks:
        return []
    limit = max_array_size if max_array_size and max_array_size > 0 else len(chunks)
    return [list(chunks[i : i + limit]) for i in range(0, len(chunks), limit)]
