"""A pass the apiserver refused (pure): the refusal becomes the AuroraCluster's
`Reconciled` condition (False, the apiserver's own words, and what to do about it) and one
Warning event per distinct refusal, instead of an error retried in the operator's log
only. The rest of the status stays as the last good pass left it; the timer's next pass
retries, and the first one that gets through sets the condition True.

Only refusals that a person must act on are conditions: a missing RBAC verb
(`PermissionDenied`), a namespace ResourceQuota (`QuotaExceeded`: also a 403, but no Role
edit helps), an admission webhook's denial (`AdmissionDenied`) and an object the
apiserver found invalid (`Rejected`, 400/422). Conflicts, timeouts and 5xx answers are
transient: kopf retries them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from .status import condition

CONDITION = "Reconciled"
DENIED = "PermissionDenied"
QUOTA = "QuotaExceeded"
ADMISSION = "AdmissionDenied"
REJECTED = "Rejected"
HINTS = {
    DENIED: "grant it in the operator's Role or ClusterRole (the chart's templates/rbac.yaml)",
    QUOTA: "raise or remove the namespace's ResourceQuota (kubectl describe resourcequota)",
    ADMISSION: "an admission webhook of this cluster refused the object: see its policy",
    REJECTED: "the apiserver refused an object the operator built from the spec: check the spec's fields",
}
# the apiserver's quota admission words (k8s.io/apiserver/pkg/admission/plugin/resourcequota)
_QUOTA_WORDS = ("exceeded quota", "status unknown for quota", "failed quota")


@dataclass(frozen=True)
class Refusal:
    reason: str  # one of HINTS' keys: the condition's reason and the event's
    message: str  # the apiserver's words (they name the verb, resource and ServiceAccount)

    @property
    def text(self) -> str:
        return f"{self.message}: {HINTS[self.reason]}"


def _message(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or exc.status)


def _classify(exc: ApiException) -> Refusal | None:
    message = _message(exc)
    if "admission webhook" in message and exc.status in (400, 403, 422):
        return Refusal(ADMISSION, message)
    if exc.status == 403:
        return Refusal(QUOTA if any(w in message for w in _QUOTA_WORDS) else DENIED, message)
    if exc.status in (400, 422):
        return Refusal(REJECTED, message)
    return None


def refusal(exc: BaseException) -> Refusal | None:
    """What the apiserver refused when EXC (or what it was raised from) is a refusal a person
    must act on, else None (retry)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a bounded walk down __cause__/__context__
        if seen is None:
            return None
        if isinstance(seen, ApiException):
            return _classify(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _conds(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(c) for c in status.get("conditions") or []]


def refused(old: Mapping[str, Any], why: Refusal, generation: int, now: str) -> dict[str, Any]:
    """OLD (the status before the pass) with `Reconciled` False for WHY."""
    old_conds = _conds(old)
    st = dict(old)
    st["conditions"] = [c for c in old_conds if c["type"] != CONDITION] + [
        condition(CONDITION, False, why.reason, why.text, generation, old_conds, now)]
    return st


def newly_refused(old: Mapping[str, Any], why: Refusal) -> bool:
    """WHY was not already the condition's: worth one event."""
    prev = next((c for c in _conds(old) if c["type"] == CONDITION), {})
    return not (prev.get("reason") == why.reason and str(prev.get("message", "")).startswith(why.message))


def granted(status: dict[str, Any], old: Mapping[str, Any], generation: int, now: str) -> None:
    """Add `Reconciled` True to STATUS (a pass that went through)."""
    old_conds = _conds(old)
    conds = [c for c in status.get("conditions") or [] if c["type"] != CONDITION]
    conds.append(condition(CONDITION, True, "Reconciled", "the last pass went through", generation, old_conds, now))
    status["conditions"] = conds
