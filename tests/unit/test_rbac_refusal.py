"""An operator pass the apiserver refuses for a missing RBAC verb: a status condition
naming it, one event per distinct refusal, the rest of the status kept (#14)."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from tidemark_operator import permissions

MESSAGE = ('poddisruptionbudgets.policy is forbidden: User "system:serviceaccount:ns:tm" cannot create '
           'resource "poddisruptionbudgets" in API group "policy" in the namespace "ns"')


def forbidden() -> ApiException:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": MESSAGE, "reason": "Forbidden"})
    return exc


def test_a_403_gives_the_apiservers_words_other_errors_none() -> None:
    assert permissions.denied(forbidden()) == MESSAGE
    try:  # wrapped by a caller: still found
        try:
            raise forbidden()
        except ApiException as inner:
            raise RuntimeError("creating the PDB") from inner
    except RuntimeError as outer:
        assert permissions.denied(outer) == MESSAGE
    bare = ApiException(status=403, reason="Forbidden")
    assert permissions.denied(bare) == "Forbidden"
    assert permissions.denied(ApiException(status=409, reason="Conflict")) is None
    assert permissions.denied(ValueError("x")) is None


def test_the_refusal_is_a_condition_the_rest_of_the_status_stays() -> None:
    old = {"phase": "Ready", "healthyPGs": "4/4",
           "conditions": [{"type": "Ready", "status": "True", "reason": "QuorumAvailable"}]}
    st = permissions.refused(old, MESSAGE, 3, "2026-12-02T17:00:00Z")
    assert st["phase"] == "Ready" and st["healthyPGs"] == "4/4"
    (c,) = [c for c in st["conditions"] if c["type"] == "Reconciled"]
    assert c["status"] == "False" and c["reason"] == "PermissionDenied" and c["observedGeneration"] == 3
    assert c["message"].startswith(MESSAGE) and "rbac.yaml" in c["message"]
    assert st["conditions"][0]["type"] == "Ready"
    # one event per distinct refusal: the same one again is not news, another one is
    assert permissions.newly_refused(old, MESSAGE)
    assert not permissions.newly_refused(st, MESSAGE)
    assert permissions.newly_refused(st, MESSAGE.replace("create", "patch"))
    # a pass that goes through flips it (a new transition time) and keeps the others
    ok = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}
    permissions.granted(ok, st, 3, "2026-12-02T17:01:00Z")
    (c2,) = [c for c in ok["conditions"] if c["type"] == "Reconciled"]
    assert c2["status"] == "True" and c2["lastTransitionTime"] == "2026-12-02T17:01:00Z"
    again = {"conditions": []}
    permissions.granted(again, ok, 3, "2026-12-02T17:02:00Z")
    assert again["conditions"][0]["lastTransitionTime"] == "2026-12-02T17:01:00Z"
