"""Turns on the one SQLite connection: an autocommit statement holds it for its run,
an explicit transaction from its first statement to COMMIT/ROLLBACK. Waiting longer
than the lock timeout is a serialization failure (40001): the client may retry."""

from __future__ import annotations

import asyncio

from .sqlstate import SERIALIZATION_FAILURE, SqlError


class Gate:
    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self.owner: object | None = None

    async def acquire(self, owner: object) -> None:
        try:
            await asyncio.wait_for(self._lock.acquire(), self.timeout)
        except TimeoutError:
            raise SqlError(
                SERIALIZATION_FAILURE,
                f"could not serialize access: another transaction held the database for {self.timeout:g} s",
            ) from None
        self.owner = owner

    def release(self, owner: object) -> None:
        if self.owner is owner and self._lock.locked():
            self.owner = None
            self._lock.release()
