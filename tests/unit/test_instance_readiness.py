"""An instance's /readyz (what gates the -rw/-ro/-r Services' endpoints on Kubernetes)."""

from __future__ import annotations

import pytest

from tidemark_sql.admin import Admin

pytestmark = pytest.mark.unit


def test_readyz_serving_writer_and_replica_within_lag() -> None:
    st: dict = {"role": "writer", "serving": True}
    admin = Admin(lambda: st)
    admin.max_lag_ms = 1000
    assert admin.ready() == (True, "ok")
    st["serving"] = False  # fenced or superseded: out of -rw
    assert admin.ready()[0] is False
    st.update(role="replica", serving=True, feed_connected=True, lag_ms=999)
    assert admin.ready()[0] is True
    st["lag_ms"] = 1001
    assert admin.ready() == (False, "lag 1001 ms > 1000 ms")
    st.update(lag_ms=0, feed_connected=False)
    assert admin.ready()[0] is False
