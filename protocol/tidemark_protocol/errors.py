"""Errors the protocol raises; each maps to a clear refusal on the wire."""


class ProtocolError(Exception):
    """Base class: the request is refused and nothing stored is touched."""

    code = "protocol_error"


class MalformedFrame(ProtocolError):
    code = "malformed"


class CorruptRecord(MalformedFrame):
    code = "corrupt_record"


class StaleEpoch(ProtocolError):
    """The request carries an older volume or membership epoch than the segment knows."""

    code = "stale_epoch"


class StaleMembership(StaleEpoch):
    """The request carries an older membership epoch of the PG: reload the membership."""

    code = "stale_membership"


class NeedsSeal(ProtocolError):
    """The writer's epoch is newer than the segment's: send the seal (epoch + truncations) first."""

    code = "needs_seal"


class ImplausibleClaim(ProtocolError):
    """The frame claims what no legitimate writer could: a VDL inside a truncated range,
    marks or PGMRPL above the frame's own VDL, a record beyond the allocation window of
    the writer's epoch. The frame (a frame-wide claim) or the group (a segment's) is
    refused as a whole; nothing of it is applied."""

    code = "implausible"


class UnknownSegment(ProtocolError):
    code = "unknown_segment"


class Truncated(ProtocolError):
    code = "truncated"


class BackPressure(ProtocolError):
    """Allocating would run beyond VDL + LAL; wait for VDL to advance."""

    code = "back_pressure"


class UserError(Exception):
    """Not a wire refusal: a problem the user of a command can fix (a bad option, URL or
    time, no fleet in --dir, a work dir we did not make). Every component raises it (or
    a subclass) for those; the `tidemark` command prints it as one line on stderr (a
    JSON `{"error": ...}` object on stdout with --json) and exits 1, never a traceback."""
