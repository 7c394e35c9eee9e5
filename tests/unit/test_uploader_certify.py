"""The backup uploader certifies a PG's log complete up to the VDL only when a read
quorum holds nothing beyond its SCL; during a membership change that quorum is three
members of the OLD set (quorum.has_read_quorum), never one counting the new target."""

from __future__ import annotations

import pytest

from tidemark_node.uploader_state import certified_end
from tidemark_protocol.quorum import Membership

pytestmark = pytest.mark.unit

OLD = ("a", "b", "c", "d", "e", "f")


def quiet(*names: str, scl: int = 10) -> dict[str, dict]:
    return {n: {"pg": 0, "max_lsn": scl} for n in names}


def test_three_quiet_members_certify_the_vdl() -> None:
    m = Membership(1, OLD)
    assert certified_end("a", m, scl=10, max_lsn=10, vdl=20, peers=quiet("b", "c")) == 20
    assert certified_end("a", m, scl=10, max_lsn=10, vdl=20, peers=quiet("b")) == 10
    busy = quiet("b") | {"c": {"pg": 0, "max_lsn": 15}}
    assert certified_end("a", m, scl=10, max_lsn=10, vdl=20, peers=busy) == 10
    assert certified_end("a", m, scl=10, max_lsn=12, vdl=20, peers=quiet("b", "c")) == 10
    assert certified_end("a", m, scl=25, max_lsn=25, vdl=20, peers={}) == 20


def test_the_new_target_does_not_count_towards_the_read_quorum() -> None:
    """f is being replaced by g. A commit acknowledged just before the change may live
    only in {c, d, e, f}: {a, b, g} holding nothing beyond a's SCL proves nothing (g is
    not hydrated yet), so a must not certify the VDL (its chunk would miss that commit)."""
    m = Membership(1, OLD).begin_replace("f", "g")
    assert certified_end("a", m, scl=10, max_lsn=10, vdl=20, peers=quiet("b", "g")) == 10
    assert certified_end("a", m, scl=10, max_lsn=10, vdl=20, peers=quiet("b", "c")) == 20
    # The target itself certifies only with three of the old set.
    assert certified_end("g", m, scl=10, max_lsn=10, vdl=20, peers=quiet("a", "b")) == 10
    assert certified_end("g", m, scl=10, max_lsn=10, vdl=20, peers=quiet("a", "b", "c")) == 20
