"""The sans-IO codec on its own: framing, replies, handshake pieces (no sockets)."""

from __future__ import annotations

import json

import pytest

from conveyor.errors import LineTooLong, ProtocolError
from conveyor.protocol import (
    NULL_BULK,
    OK,
    Challenge,
    Hello,
    LineBuffer,
    ReplyKind,
    ReplyReader,
    bulk,
    decode_hello,
    error,
    greeting,
    hash_password,
    new_challenge,
    password_matches,
    simple,
    split_command,
)


def lines_of(buffer: LineBuffer) -> list[bytes]:
    out = []
    while (line := buffer.next_line()) is not None:
        out.append(line)
    return out


def test_line_buffer_splits_crlf_and_bare_lf() -> None:
    buffer = LineBuffer(100)
    buffer.feed(b"PUSH {}\r\nINFO\nFET")
    assert lines_of(buffer) == [b"PUSH {}", b"INFO"]
    buffer.feed(b"CH a b\r")
    assert lines_of(buffer) == []
    buffer.feed(b"\n")
    assert lines_of(buffer) == [b"FETCH a b"]
    assert len(buffer) == 0


def test_line_buffer_keeps_empty_lines_and_split_crlf() -> None:
    buffer = LineBuffer(10)
    buffer.feed(b"\r\n\nA\r")
    assert lines_of(buffer) == [b"", b""]
    buffer.feed(b"\nB\n")
    assert lines_of(buffer) == [b"A", b"B"]


def test_line_buffer_bounds_an_unterminated_line() -> None:
    buffer = LineBuffer(8)
    buffer.feed(b"12345678\r")  # exactly the max plus a pending CR is fine
    assert buffer.next_line() is None
    buffer.feed(b"\n")
    assert buffer.next_line() == b"12345678"
    buffer.feed(b"123456789x")
    with pytest.raises(LineTooLong, match=r"line too long \(max 8 bytes\)"):
        buffer.next_line()
    assert len(buffer) == 0


def test_line_buffer_bounds_a_complete_long_line() -> None:
    buffer = LineBuffer(4)
    buffer.feed(b"ok\n123456\n")
    assert buffer.next_line() == b"ok"
    with pytest.raises(LineTooLong):
        buffer.next_line()


def test_line_buffer_many_lines_compacts() -> None:
    buffer = LineBuffer(100)
    payload = b"".join(b"LINE %d\n" % i for i in range(50_000))
    for start in range(0, len(payload), 4096):
        buffer.feed(payload[start : start + 4096])
    assert lines_of(buffer) == [b"LINE %d" % i for i in range(50_000)]


def test_split_command_at_first_space() -> None:
    assert split_command(b'MUTATE {"a": 1}') == (b"MUTATE", b'{"a": 1}')
    assert split_command(b"END") == (b"END", b"")


def test_reply_encoders_are_exact() -> None:
    assert OK == b"+OK\r\n"
    assert NULL_BULK == b"$-1\r\n"
    assert simple("HI there") == b"+HI there\r\n"
    assert error("ERR", "unknown command foo") == b"-ERR unknown command foo\r\n"
    assert error("ERR", "a\r\nb") == b"-ERR a  b\r\n"
    assert bulk(b'{"a":1}') == b'$7\r\n{"a":1}\r\n'
    assert bulk(b"") == b"$0\r\n\r\n"


def test_reply_reader_parses_every_kind_in_pieces() -> None:
    stream = OK + simple("HI x") + error("NOTUNIQUE", "Job not unique") + bulk(b"ab\r\ncd")
    stream += NULL_BULK + bulk(b"")
    reader = ReplyReader()
    replies = []
    for byte in stream:  # one byte at a time: every partial state is exercised
        reader.feed(bytes([byte]))
        while (reply := reader.next_reply()) is not None:
            replies.append(reply)
    assert [r.kind for r in replies] == [
        ReplyKind.OK,
        ReplyKind.SIMPLE,
        ReplyKind.ERROR,
        ReplyKind.BULK,
        ReplyKind.NULL,
        ReplyKind.BULK,
    ]
    assert replies[1].text == "HI x"
    assert replies[2].text == "NOTUNIQUE Job not unique"
    assert replies[3].data == b"ab\r\ncd"
    assert replies[5].data == b""


def test_reply_reader_rejects_garbage_and_oversize() -> None:
    reader = ReplyReader()
    reader.feed(b"*3\r\n")
    with pytest.raises(ProtocolError, match="not a Faktory reply"):
        reader.next_reply()
    small = ReplyReader(max_bulk_bytes=4, max_line_bytes=10)
    small.feed(b"$5\r\n")
    with pytest.raises(LineTooLong):
        small.next_reply()
    small = ReplyReader(max_bulk_bytes=4, max_line_bytes=10)
    small.feed(b"+" + b"x" * 20)
    with pytest.raises(LineTooLong):
        small.next_reply()
    bad = ReplyReader()
    bad.feed(b"$2\r\nabXY")
    with pytest.raises(ProtocolError, match="CRLF"):
        bad.next_reply()
    bad = ReplyReader()
    bad.feed(b"$x\r\n")
    with pytest.raises(ProtocolError, match="bulk length"):
        bad.next_reply()


def test_password_hash_vector() -> None:
    assert (
        hash_password("foobar", "55104dc76695721d", 1545)
        == "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30"
    )


def test_greeting_bytes() -> None:
    assert greeting(None) == b'+HI {"v":2}\r\n'
    assert greeting(Challenge(4000, "abc")) == b'+HI {"v":2,"i":4000,"s":"abc"}\r\n'


def test_new_challenge_ranges() -> None:
    for _ in range(200):
        challenge = new_challenge()
        assert 4000 <= challenge.iterations <= 8095
        assert challenge.salt == challenge.salt.lower()
        assert 1 <= len(challenge.salt) <= 16
        assert int(challenge.salt, 16) < 2**63
        line = greeting(challenge)
        assert b" " not in line[4:]  # compact JSON: the Node client splits on spaces
        assert json.loads(line[4:]) == {"v": 2, "i": challenge.iterations, "s": challenge.salt}


def test_decode_hello() -> None:
    hello = decode_hello(b'HELLO {"hostname":"h","wid":"w","pid":3,"labels":["a"],"v":2,"x":[1]}')
    assert hello is not None
    assert (hello.hostname, hello.wid, hello.pid, hello.labels, hello.v) == ("h", "w", 3, ["a"], 2)
    assert decode_hello(b"HELLO {}") is not None
    mixed = decode_hello(b'HELLO {"WID":"w2","Hostname":"h2","PID":4}')  # Go matches any case
    assert mixed is not None
    assert (mixed.wid, mixed.hostname, mixed.pid) == ("w2", "h2", 4)
    for bad in (
        b"HELLO x",
        b"HELLO  {}",
        b"PUSH {}",
        b'HELLO {"pid":"x"}',
        b'HELLO {"v":300}',
        b"HELLO {",
        b'HELLO {"labels":[1]}',
    ):
        assert decode_hello(bad) is None, bad


def test_password_matches_v2_and_single_round_fallback() -> None:
    challenge = Challenge(1545, "55104dc76695721d")
    good = hash_password("foobar", challenge.salt, 1545)
    assert password_matches(decode_or_fail(f'{{"v":2,"pwdhash":"{good}"}}'), "foobar", challenge)
    assert not password_matches(decode_or_fail(f'{{"pwdhash":"{good}"}}'), "foobar", challenge)
    once = hash_password("foobar", challenge.salt, 1)
    assert password_matches(decode_or_fail(f'{{"pwdhash":"{once}"}}'), "foobar", challenge)
    assert password_matches(decode_or_fail(f'{{"v":1,"pwdhash":"{once}"}}'), "foobar", challenge)
    assert not password_matches(decode_or_fail('{"v":2}'), "foobar", challenge)


def decode_or_fail(payload: str) -> Hello:
    hello = decode_hello(b"HELLO " + payload.encode())
    assert hello is not None
    return hello
