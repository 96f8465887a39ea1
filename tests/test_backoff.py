from __future__ import annotations

import random

import pytest

from edge.backoff import Backoff


def test_ceiling_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(base=0.5, cap=5.0, rng=random.Random(1))
    ceilings = []
    for _ in range(7):
        delay = b.failed()
        ceilings.append(b.ceiling)
        assert 0.0 <= delay <= b.ceiling
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    b.succeeded()
    assert b.failures == 0 and b.ceiling == 0.5


def test_floor_keeps_delays_off_zero() -> None:
    b = Backoff(base=1.0, cap=8.0, floor=0.5, rng=random.Random(2))
    for _ in range(50):
        delay = b.failed()
        assert 0.5 * b.ceiling <= delay <= b.ceiling


def test_retry_after_wins_over_a_shorter_draw_but_is_capped() -> None:
    b = Backoff(base=1.0, cap=10.0, rng=random.Random(3))
    assert b.failed(retry_after=7.0) == 7.0
    assert b.failed(retry_after=60.0) == 10.0


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0, cap=1)
    with pytest.raises(ValueError):
        Backoff(base=1, cap=2, floor=1.5)
