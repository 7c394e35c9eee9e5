"""The VDL marks a node stream has not sent yet (Writer.marks_since)."""

from __future__ import annotations

from collections import deque

from tidemark_compute.writer import MAX_MARKS, Writer


def _writer(base: int, count: int) -> Writer:
    writer = object.__new__(Writer)  # only the marks: no topology, no streams
    writer._marks = deque((base + i, 1000 + i) for i in range(count))
    writer._marks_base = base
    return writer


def test_a_stream_gets_exactly_the_marks_after_its_position() -> None:
    writer = _writer(base=50, count=MAX_MARKS)
    end = 50 + MAX_MARKS
    assert writer.marks_since(end) == ([], end)
    assert writer.marks_since(end - 3) == ([(end - 3, 1000 + MAX_MARKS - 3), (end - 2, 1000 + MAX_MARKS - 2),
                                           (end - 1, 1000 + MAX_MARKS - 1)], end)
    marks, position = writer.marks_since(0)  # behind the oldest kept mark: all of them
    assert position == end and len(marks) == MAX_MARKS and marks[0] == (50, 1000)


def test_no_marks_yet() -> None:
    assert _writer(base=0, count=0).marks_since(0) == ([], 0)
