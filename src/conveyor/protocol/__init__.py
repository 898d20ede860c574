"""The Faktory Work Protocol as a sans-IO codec: bytes in, lines and replies out, and back.

Nothing here touches a socket or an event loop. The server (``conveyor.server``) and the client
(``conveyor.client``) each wrap these pieces in a short loop, the way h11 is wrapped by its users.

* ``framing``: ``LineBuffer``, a bounded receive buffer that splits ``\\r\\n`` / ``\\n`` lines.
* ``replies``: reply encoders (``OK``, ``simple``, ``error``, ``bulk``, ``NULL_BULK``) and the
  client-side ``ReplyReader``.
* ``auth``: the ``+HI`` greeting, the ``HELLO`` payload and the password hash.
"""

from __future__ import annotations

from conveyor.protocol.auth import (
    Challenge,
    Hello,
    decode_hello,
    greeting,
    hash_password,
    new_challenge,
    password_matches,
)
from conveyor.protocol.framing import DEFAULT_MAX_LINE_BYTES, LineBuffer, split_command
from conveyor.protocol.replies import (
    NULL_BULK,
    OK,
    Reply,
    ReplyKind,
    ReplyReader,
    bulk,
    error,
    simple,
)

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "NULL_BULK",
    "OK",
    "Challenge",
    "Hello",
    "LineBuffer",
    "Reply",
    "ReplyKind",
    "ReplyReader",
    "bulk",
    "decode_hello",
    "error",
    "greeting",
    "hash_password",
    "new_challenge",
    "password_matches",
    "simple",
    "split_command",
]
