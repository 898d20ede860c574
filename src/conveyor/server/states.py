"""The connection state machine, as one table (STYLE.md §5)::

    GREETING --HELLO line--> HELLO --password ok, registered--> READY --END / EOF / error--> CLOSED
        \\____________________________\\________________________________________________/^

``+HI`` is written when the connection is made (GREETING). The first line must be a valid
``HELLO`` (then HELLO, while the password is checked and the client registered); after ``+OK``
every command is allowed (READY). Any state can close.
"""

from __future__ import annotations

import enum

from conveyor.errors import ProtocolError

__all__ = ["ConnState", "advance"]


class ConnState(enum.Enum):
    GREETING = "greeting"
    HELLO = "hello"
    READY = "ready"
    CLOSED = "closed"


TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    ConnState.GREETING: frozenset({ConnState.HELLO, ConnState.CLOSED}),
    ConnState.HELLO: frozenset({ConnState.READY, ConnState.CLOSED}),
    ConnState.READY: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}


def advance(current: ConnState, new: ConnState) -> ConnState:
    """Return ``new`` if the table allows ``current -> new``; raise ``ProtocolError`` if not."""
    if new not in TRANSITIONS[current]:
        raise ProtocolError(f"connection cannot go from {current.value} to {new.value}")
    return new
