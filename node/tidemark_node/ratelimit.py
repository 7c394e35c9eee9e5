"""A token bucket for background transfer bandwidth (rebuild traffic).

`await bucket.consume(n)` returns once n bytes may pass; every caller sharing a bucket
shares its rate. Rate 0 means unlimited. The burst is small (0.1 s of rate, at least
16 KiB) so a cap is felt from the first megabytes, not after a large free burst.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: int, burst: int | None = None) -> None:
        self.rate = max(0, int(rate))
        self.burst = burst if burst is not None else max(16 << 10, self.rate // 10)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()
        self.waited = 0.0  # seconds spent throttled (observability)
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    async def consume(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        async with self._lock:  # FIFO: waiters queue behind one another
            self._refill()
            self.tokens -= n  # may go negative: a large read pays its debt by waiting
            if self.tokens < 0:
                delay = -self.tokens / self.rate
                self.waited += delay
                await asyncio.sleep(delay)
                self._refill()
