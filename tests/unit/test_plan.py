"""Planning is pure: counts in, chunk ranges out."""

import itertools

import pytest

from djhpc import plan


def test_split_covers_every_key_once_and_evenly() -> None:
    chunks = plan.split(1003, 100)
    assert len(chunks) == 11
    assert chunks[0].lo == 0 and chunks[-1].hi == 1003
    assert all(a.hi == b.lo for a, b in itertools.pairwise(chunks))
    assert {c.keys for c in chunks} <= {91, 92}  # even, never one tiny straggler


def test_split_offsets_for_later_attempts() -> None:
    chunks = plan.split(10, 4, first_chunk=7, first_key=500)
    assert [c.chunk for c in chunks] == [7, 8, 9]
    assert chunks[0].lo == 500 and chunks[-1].hi == 510


def test_split_nothing() -> None:
    assert plan.split(0, 10) == []


@pytest.mark.parametrize(
    ("n", "kwargs", "size"),
    [
        (640, {}, 7),  # ~100 tasks on a cluster
        (10, {}, 1),
        (5_000_000, {}, plan.MAX_DEFAULT_CHUNK),  # the default never exceeds 1,000 keys
        (640, {"parallel_default": 2}, 320),  # local: one chunk per slot
        (10_000, {"parallel_default": 2}, plan.MAX_DEFAULT_CHUNK),
        (640, {"size": 50}, 50),
        (640, {"tasks": 3}, 214),
    ],
)
def test_chunk_size(n: int, kwargs: dict, size: int) -> None:
    assert plan.chunk_size(n, **kwargs) == size


def test_arrays_respect_the_cluster_limit() -> None:
    chunks = plan.split(100, 1)
    groups = plan.arrays(chunks, 30)
    assert [len(g) for g in groups] == [30, 30, 30, 10]
    assert [c for g in groups for c in g] == chunks
    assert plan.arrays(chunks, None) == [chunks]
