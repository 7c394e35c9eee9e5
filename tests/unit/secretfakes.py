"""A fake of the few Secret calls the operator's certificate code makes (create, read,
replace with compare-and-swap on resourceVersion), for the node and instance TLS tests."""

from __future__ import annotations

from typing import Any

from tidemark_operator.placement import Conflict


class FakeSecrets:
    """Secrets by name in namespace `ns`; RACE: every replace loses to a concurrent change."""

    def __init__(self, race: bool = False) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.race, self.created, self.replaced, self.version = race, 0, 0, 1

    def read(self, kind: str, name: str, ns: str) -> dict[str, Any] | None:
        assert kind == "Secret" and ns == "ns"
        got = self.secrets.get(name)
        return None if got is None else {**got, "metadata": {**got["metadata"], "resourceVersion": str(self.version)}}

    def create(self, obj: dict[str, Any]) -> None:
        self.created += 1
        self.secrets[obj["metadata"]["name"]] = obj

    def replace(self, obj: dict[str, Any]) -> None:
        assert obj["metadata"]["resourceVersion"] == str(self.version)
        if self.race:
            self.version += 1
            raise Conflict("changed")
        self.replaced += 1
        self.version += 1
        self.secrets[obj["metadata"]["name"]] = obj
