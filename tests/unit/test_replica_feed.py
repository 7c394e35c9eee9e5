"""The replica feed's messages (tidemark_protocol.feed) and the page map's inverse the
replica uses to drop changed pages from its cache."""

from __future__ import annotations

import pytest

from tidemark_protocol.errors import MalformedFrame
from tidemark_protocol.feed import UNCHAINED, VdlUpdate, decode, encode_read_point, encode_update
from tidemark_protocol.layout import VolumeLayout
from tidemark_sql.pagemap import PageMap

pytestmark = pytest.mark.unit


def test_updates_and_read_points_round_trip() -> None:
    update = VdlUpdate(3, 20_000_123, UNCHAINED, {0: 20_000_120, 1: 0, 3: 20_000_123}, [0, 257, 1024], 1_700_000)
    assert decode(encode_update(update)) == update
    assert decode(encode_read_point(42)) == 42


@pytest.mark.parametrize("text", ["", "{}", '{"t": "vdl"}', '{"t": "nope"}', '{"t": "read_point", "lsn": "x"}',
                                  "[1, 2]", '{"t": "vdl", "epoch": 1, "vdl": 2, "prev": 1, "tails": [], '
                                            '"pages": [], "at_us": 0}'])
def test_malformed_messages_are_refused(text: str) -> None:
    with pytest.raises(MalformedFrame):
        decode(text)


def test_sqlite_index_inverts_volume_page() -> None:
    pages = PageMap(VolumeLayout(4, 64, 4096))
    for index in range(pages.capacity):
        assert pages.sqlite_index(pages.volume_page(index)) == index
