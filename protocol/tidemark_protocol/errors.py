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


class UnknownSegment(ProtocolError):
    code = "unknown_segment"


class Truncated(ProtocolError):
    code = "truncated"


class BackPressure(ProtocolError):
    """Allocating would run beyond VDL + LAL; wait for VDL to advance."""

    code = "back_pressure"
