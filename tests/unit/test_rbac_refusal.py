"""An operator pass the apiserver refuses (a missing RBAC verb, a ResourceQuota, a webhook,
an invalid object): a status condition naming it with what to do, one event per distinct
refusal, the rest of the status kept; transient errors are not conditions (#14). The
ApiExceptions are built here with the apiserver's own words (the rig tests cause the RBAC
and quota refusals for real)."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from tidemark_operator import refusals
from tidemark_operator.refusals import Refusal

MESSAGE = ('poddisruptionbudgets.policy is forbidden: User "system:serviceaccount:ns:tm" cannot create '
           'resource "poddisruptionbudgets" in API group "policy" in the namespace "ns"')
QUOTA = ('services "demo-nodes" is forbidden: exceeded quota: no-services, requested: services=1, '
         'used: services=0, limited: services=0')
WEBHOOK = 'admission webhook "policy.example.com" denied the request: no StatefulSets here'
INVALID = 'StatefulSet.apps "demo-zone-a" is invalid: spec.template.spec.containers[0].image: Required value'


def api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="Refused")
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": message})
    return exc


def test_each_refusal_gets_its_reason_with_the_apiservers_words_transient_errors_none() -> None:
    assert refusals.refusal(api_error(403, MESSAGE)) == Refusal(refusals.DENIED, MESSAGE)
    assert refusals.refusal(api_error(403, QUOTA)) == Refusal(refusals.QUOTA, QUOTA)
    assert refusals.refusal(api_error(400, WEBHOOK)) == Refusal(refusals.ADMISSION, WEBHOOK)
    assert refusals.refusal(api_error(422, INVALID)) == Refusal(refusals.REJECTED, INVALID)
    try:  # wrapped by a caller: still found
        try:
            raise api_error(403, MESSAGE)
        except ApiException as inner:
            raise RuntimeError("creating the PDB") from inner
    except RuntimeError as outer:
        assert refusals.refusal(outer) == Refusal(refusals.DENIED, MESSAGE)
    assert refusals.refusal(ApiException(status=403, reason="Forbidden")) == Refusal(refusals.DENIED, "Forbidden")
    for transient in (409, 429, 500, 503):
        assert refusals.refusal(api_error(transient, "try again")) is None
    assert refusals.refusal(ValueError("x")) is None
    # a quota is not an RBAC matter: no Role edit is suggested for it
    assert "ResourceQuota" in Refusal(refusals.QUOTA, QUOTA).text and "rbac" not in Refusal(refusals.QUOTA, QUOTA).text


def test_the_refusal_is_a_condition_the_rest_of_the_status_stays() -> None:
    old = {"phase": "Ready", "healthyPGs": "4/4",
           "conditions": [{"type": "Ready", "status": "True", "reason": "QuorumAvailable"}]}
    why = Refusal(refusals.DENIED, MESSAGE)
    st = refusals.refused(old, why, 3, "2026-12-02T17:00:00Z")
    assert st["phase"] == "Ready" and st["healthyPGs"] == "4/4"
    (c,) = [c for c in st["conditions"] if c["type"] == "Reconciled"]
    assert c["status"] == "False" and c["reason"] == "PermissionDenied" and c["observedGeneration"] == 3
    assert c["message"].startswith(MESSAGE) and "rbac.yaml" in c["message"]
    assert st["conditions"][0]["type"] == "Ready"
    # one event per distinct refusal: the same one again is not news, another one is
    assert refusals.newly_refused(old, why)
    assert not refusals.newly_refused(st, why)
    assert refusals.newly_refused(st, Refusal(refusals.DENIED, MESSAGE.replace("create", "patch")))
    assert refusals.newly_refused(st, Refusal(refusals.QUOTA, MESSAGE))
    # a pass that goes through flips it (a new transition time) and keeps the others
    ok = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}
    refusals.granted(ok, st, 3, "2026-12-02T17:01:00Z")
    (c2,) = [c for c in ok["conditions"] if c["type"] == "Reconciled"]
    assert c2["status"] == "True" and c2["lastTransitionTime"] == "2026-12-02T17:01:00Z"
    again = {"conditions": []}
    refusals.granted(again, ok, 3, "2026-12-02T17:02:00Z")
    assert again["conditions"][0]["lastTransitionTime"] == "2026-12-02T17:01:00Z"
