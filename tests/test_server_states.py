"""The connection state table allows exactly the documented moves."""

from __future__ import annotations

import itertools

import pytest

from conveyor.errors import ProtocolError
from conveyor.server.states import ConnState, advance

ALLOWED = {
    (ConnState.GREETING, ConnState.HELLO),
    (ConnState.GREETING, ConnState.CLOSED),
    (ConnState.HELLO, ConnState.READY),
    (ConnState.HELLO, ConnState.CLOSED),
    (ConnState.READY, ConnState.CLOSED),
}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(ConnState, ConnState)))
def test_transitions(current: ConnState, new: ConnState) -> None:
    if (current, new) in ALLOWED:
        assert advance(current, new) is new
    else:
        with pytest.raises(ProtocolError, match=f"from {current.value} to {new.value}"):
            advance(current, new)
