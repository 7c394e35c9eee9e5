"""Tidemark protocol: pure, sans-IO state machines shared by writer, nodes and operator.

Nothing here opens a socket, reads a clock or touches a disk; callers feed events in
and act on what comes back. That is what lets the deterministic simulation drive the
same code as the real processes.
"""
