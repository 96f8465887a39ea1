"""One backoff for everything that retries: the broker link, the upstream sender, printers,
partner calls.

Capped exponential with jitter. The ceiling after `n` failures is `min(cap, base * 2**(n-1))`;
the delay is drawn uniformly between `floor * ceiling` and the ceiling. `floor=0` is "full
jitter" (spreads a crowd of retriers best, used towards servers); a floor above zero keeps a
lone retrier (one printer) from hammering a dead device with near-zero delays while still
breaking lock-step. A `Retry-After` the peer sent wins over a shorter draw, capped too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float
    cap: float
    floor: float = 0.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    failures: int = 0
    last_delay: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap):
            raise ValueError("backoff needs 0 < base <= cap")
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError("backoff floor is a fraction of the ceiling, 0..1")

    @property
    def ceiling(self) -> float:
        """The longest the next delay can be (before any Retry-After)."""
        exponent = min(max(self.failures - 1, 0), 62)
        return min(self.cap, self.base * (2.0 ** exponent))

    def failed(self, retry_after: float | None = None) -> float:
        """Count one more failure; the seconds to wait before the next attempt."""
        self.failures += 1
        ceiling = self.ceiling
        delay = self.rng.uniform(self.floor * ceiling, ceiling)
        if retry_after is not None and retry_after > delay:
            delay = min(retry_after, self.cap)
        self.last_delay = delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.last_delay = 0.0


__all__ = ["Backoff"]
