"""A pass the apiserver refused for want of an RBAC permission (pure): the refusal becomes
the AuroraCluster's `Reconciled` condition (False, reason `PermissionDenied`, the
apiserver's own words, which name the verb, the resource and the ServiceAccount) and one
Warning event per distinct refusal, instead of an error retried in the operator's log
only. The rest of the status stays as the last good pass left it; the next pass that gets
through sets the condition True."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from .status import condition

CONDITION = "Reconciled"
DENIED = "PermissionDenied"
HINT = "grant it in the operator's Role or ClusterRole (the chart's templates/rbac.yaml)"


def denied(exc: BaseException) -> str | None:
    """The apiserver's message when EXC (or what it was raised from) is a 403, else None."""
    seen: BaseException | None = exc
    for _ in range(8):  # a bounded walk down __cause__/__context__
        if seen is None:
            return None
        if isinstance(seen, ApiException) and seen.status == 403:
            try:
                message = json.loads(seen.body or "{}").get("message")
            except (ValueError, AttributeError):
                message = None
            return str(message or seen.reason or "Forbidden")
        seen = seen.__cause__ or seen.__context__
    return None


def _conds(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(c) for c in status.get("conditions") or []]


def refused(old: Mapping[str, Any], message: str, generation: int, now: str) -> dict[str, Any]:
    """OLD (the status before the pass) with `Reconciled` False for MESSAGE."""
    old_conds = _conds(old)
    st = dict(old)
    st["conditions"] = [c for c in old_conds if c["type"] != CONDITION] + [
        condition(CONDITION, False, DENIED, f"{message}: {HINT}", generation, old_conds, now)]
    return st


def newly_refused(old: Mapping[str, Any], message: str) -> bool:
    """MESSAGE was not already the condition's: worth one event."""
    prev = next((c for c in _conds(old) if c["type"] == CONDITION), {})
    return not (prev.get("reason") == DENIED and str(prev.get("message", "")).startswith(message))


def granted(status: dict[str, Any], old: Mapping[str, Any], generation: int, now: str) -> None:
    """Add `Reconciled` True to STATUS (a pass that went through)."""
    old_conds = _conds(old)
    conds = [c for c in status.get("conditions") or [] if c["type"] != CONDITION]
    conds.append(condition(CONDITION, True, "Reconciled", "the last pass went through", generation, old_conds, now))
    status["conditions"] = conds
