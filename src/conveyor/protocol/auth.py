"""The handshake (faktory.md §1.2): ``+HI`` greeting, ``HELLO`` payload, password hash.

::

    S: +HI {"v":2}                      or  +HI {"v":2,"i":5123,"s":"1f3a..."} with a password
    C: HELLO {"hostname":"h","wid":"w1","pid":7,"labels":["x"],"v":2,"pwdhash":"..."}
    S: +OK                              or  -ERR Invalid password, then close
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated, Any, NamedTuple

import msgspec

__all__ = [
    "PROTOCOL_VERSION",
    "Challenge",
    "Hello",
    "decode_hello",
    "greeting",
    "hash_password",
    "new_challenge",
    "password_matches",
]

PROTOCOL_VERSION = 2
MIN_ITERATIONS = 4000
MAX_ITERATIONS = 8095  # Faktory: 4000 + rand(4096)
HELLO_PREFIX = b"HELLO {"


def hash_password(password: str, salt: str, iterations: int) -> str:
    """sha256 over ``password + salt``, then ``iterations - 1`` more times over the raw digest."""
    digest = hashlib.sha256((password + salt).encode()).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


class Challenge(NamedTuple):
    """The password challenge a server sends in ``+HI`` when it has a password."""

    iterations: int
    salt: str


def new_challenge() -> Challenge:
    iterations = MIN_ITERATIONS + secrets.randbelow(MAX_ITERATIONS - MIN_ITERATIONS + 1)
    salt = format(secrets.randbits(63), "x")  # lowercase hex, not zero-padded, as Faktory
    return Challenge(iterations, salt)


def greeting(challenge: Challenge | None) -> bytes:
    """The ``+HI`` line. The JSON stays compact: the Node client splits the line on spaces."""
    if challenge is None:
        return b'+HI {"v":2}\r\n'
    return f'+HI {{"v":2,"i":{challenge.iterations},"s":"{challenge.salt}"}}\r\n'.encode()


class Hello(msgspec.Struct):
    """The ``HELLO`` payload. Unknown keys are ignored; ``null`` means "not given"."""

    hostname: str | None = None
    wid: str | None = None
    pid: int | None = None
    labels: list[str] | None = None
    v: Annotated[int, msgspec.Meta(ge=0, le=255)] | None = None  # Go: uint8
    pwdhash: str | None = None
    username: str | None = None
    rss_kb: int | None = None


_object_decoder = msgspec.json.Decoder(dict[str, Any])


def decode_hello(line: bytes) -> Hello | None:
    """Parse a ``HELLO {...}`` line; ``None`` for anything else (the server then just closes).

    Keys match case-insensitively, as Go's JSON decoder matches them in Faktory.
    """
    if not line.startswith(HELLO_PREFIX):
        return None
    try:
        fields = _object_decoder.decode(line[len(HELLO_PREFIX) - 1 :])
        return msgspec.convert({key.lower(): value for key, value in fields.items()}, Hello)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def password_matches(hello: Hello, password: str, challenge: Challenge) -> bool:
    """Check ``pwdhash`` in constant time; clients before v2 hash once (Faktory's fallback)."""
    iterations = challenge.iterations if (hello.v or 0) >= PROTOCOL_VERSION else 1
    expected = hash_password(password, challenge.salt, iterations)
    return hmac.compare_digest(expected.encode(), (hello.pwdhash or "").encode())
