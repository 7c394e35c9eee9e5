"""Replica lag sampled while a benchmark runs: a thread that reads a replica instance's
admin `/v1/status` (`lag_ms`: for the newest VDL the replica knows, the time from the
writer making it durable to the replica receiving it) every `interval` seconds."""

from __future__ import annotations

import json
import statistics
import threading
import urllib.request
from types import TracebackType

INTERVAL = 0.05


def percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method), None without values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class LagSampler:
    def __init__(self, admin_url: str, interval: float = INTERVAL) -> None:
        self.url = f"{admin_url}/v1/status"
        self.interval = interval
        self.samples: list[float] = []
        self.errors = 0  # polls the replica did not answer (or answered without a lag)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-lag", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    lag = json.loads(resp.read()).get("lag_ms")
            except (OSError, ValueError):
                lag = None
            if isinstance(lag, int | float):
                self.samples.append(float(lag))
            else:
                self.errors += 1

    def summary(self) -> dict:
        p50, p99 = percentile(self.samples, 50), percentile(self.samples, 99)
        return {
            "replica_lag_p50_ms": None if p50 is None else round(p50, 2),
            "replica_lag_p99_ms": None if p99 is None else round(p99, 2),
            "replica_lag_max_ms": round(max(self.samples), 2) if self.samples else None,
            "replica_lag_samples": len(self.samples),
        }

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
