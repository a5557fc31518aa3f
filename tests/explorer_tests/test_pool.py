from __future__ import annotations

import pytest

from explorer.pool import HostPool
from launchers.hosts import HostInfo


def _pool(n: int) -> HostPool:
    return HostPool([HostInfo(f"n{i}", 4) for i in range(n)])


def test_slices_are_disjoint_and_come_back_when_released():
    pool = _pool(3)
    a = pool.acquire(1)
    b = pool.acquire(2)
    assert a is not None and b is not None
    assert {h.name for h in a}.isdisjoint({h.name for h in b})
    assert pool.acquire(1) is None  # all busy: the trial waits
    pool.release(a)
    c = pool.acquire(1)
    assert c == a
    pool.release(b)
    pool.release(c)
    assert len(pool.free) == 3


def test_a_trial_bigger_than_the_pool_is_refused_not_queued():
    pool = _pool(2)
    with pytest.raises(ValueError, match="needs 3 node"):
        pool.acquire(3)
    with pytest.raises(ValueError, match="twice"):
        HostPool([HostInfo("a", 1), HostInfo("a", 1)])
