"""HI/HELLO, passwords, deadlines, limits, oversize lines and shutdown, over loopback."""

from __future__ import annotations

import asyncio
import socket
import time

import msgspec
import pytest

from conveyor.protocol import hash_password
from tests.support.server import MakeServer, RawConnect, RunningServer


async def test_password_greeting_and_handshake(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    running = await make_server(password="foobar")
    client = await raw_client(running.port, hello=None)
    assert client.greeting.startswith(b'+HI {"v":2,"i":')
    challenge = msgspec.json.decode(client.greeting[4:])
    assert list(challenge) == ["v", "i", "s"]
    pwdhash = hash_password("foobar", challenge["s"], challenge["i"])
    hello = b'HELLO {"v":2,"pwdhash":"' + pwdhash.encode() + b'"}'
    assert await client.call(hello) == b"+OK\r\n"
    assert await client.call(b"FETCH none") == b"$-1\r\n"


async def test_password_single_round_for_old_clients(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    running = await make_server(password="foobar")
    for version in (b"", b'"v":1,'):
        client = await raw_client(running.port, hello=None)
        challenge = msgspec.json.decode(client.greeting[4:])
        once = hash_password("foobar", challenge["s"], 1)
        hello = b"HELLO {" + version + b'"pwdhash":"' + once.encode() + b'"}'
        assert await client.call(hello) == b"+OK\r\n"


async def test_wrong_or_missing_password(make_server: MakeServer, raw_client: RawConnect) -> None:
    running = await make_server(password="foobar")
    for hello in (b'HELLO {"v":2,"pwdhash":"00"}', b'HELLO {"v":2}'):
        client = await raw_client(running.port, hello=None)
        assert await client.call(hello) == b"-ERR Invalid password\r\n"
        assert await client.closed_by_server()
    ok = await raw_client(running.port, password="foobar")
    assert await ok.call(b"FETCH x") == b"$-1\r\n"


async def _guess(port: int, within: float = 5.0) -> bytes:
    """One connection, one HELLO with a wrong password; the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()
        writer.write(b'HELLO {"v":2,"pwdhash":"0123"}\r\n')
        return await asyncio.wait_for(reader.readline(), within)
    finally:
        writer.close()


async def test_wrong_passwords_are_slowed_but_a_good_client_is_not(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    """Issue 17: 1,000 wrong passwords at 440/s, each ~2 ms of event-loop CPU, raised a good
    client's connect+PUSH from 5.7 to 33.9 ms. Now failures from an address are answered ever
    later (here all come from 127.0.0.1, as the good client does), and only failures are."""
    running = await make_server(password="s3cret")
    loop = asyncio.get_running_loop()
    replies: list[bytes] = []
    waits: list[float] = []

    async def guesser(until: float) -> None:
        while loop.time() < until:
            started = loop.time()
            replies.append(await _guess(running.port))
            waits.append(loop.time() - started)

    guessing = asyncio.create_task(guesser(loop.time() + 1.5))
    await asyncio.sleep(0.5)  # the guesser is being slowed down by now
    for n in range(3):
        started = loop.time()
        good = await raw_client(running.port, password="s3cret")  # asserts +OK
        assert await good.call(b'PUSH {"jid":"good-0000%d","jobtype":"T","args":[]}' % n) == (
            b"+OK\r\n"
        )
        took = loop.time() - started
        assert took < 0.5, f"a good client took {took * 1000:.0f} ms to connect and push"
    await guessing
    assert set(replies) == {b"-ERR Invalid password\r\n"}
    assert len(replies) <= 15, f"{len(replies)} guesses in 1.5 s"  # it was ~650
    assert waits[-1] >= 0.4  # the delay grew with each failure (50 ms, 100 ms, ...)
    assert running.server.guard is not None
    assert running.server.guard.failures("127.0.0.1") == len(replies)


async def test_parallel_guesses_from_one_address_are_bounded(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.server.guard import MAX_CHECKS_PER_ADDRESS

    # Failures held long: on a loaded machine the twelve connections may take longer to
    # arrive than the usual 50 ms delay, and a check that ended frees its place.
    monkeypatch.setattr("conveyor.server.guard.FIRST_FAILURE_DELAY_SECONDS", 1.0)
    monkeypatch.setattr("conveyor.server.guard.MAX_FAILURE_DELAY_SECONDS", 1.0)
    running = await make_server(password="s3cret", handshake_timeout_seconds=30)
    count = MAX_CHECKS_PER_ADDRESS + 4
    replies = await asyncio.gather(*(_guess(running.port) for _ in range(count)))
    busy = b"-ERR too many password checks from 127.0.0.1 at once; try later\r\n"
    assert sorted(replies) == sorted(
        [b"-ERR Invalid password\r\n"] * MAX_CHECKS_PER_ADDRESS + [busy] * 4
    )


async def test_password_checks_leave_the_event_loop_free(
    make_server: MakeServer, raw_client: RawConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a long handshake deadline: on a loaded machine the long hash below may take over 2 s
    running = await make_server(password="s3cret", handshake_timeout_seconds=30)
    other = await raw_client(running.port, password="s3cret")
    # ~1 s of hashing for the next challenges, instead of ~2 ms
    monkeypatch.setattr("conveyor.protocol.auth.MIN_ITERATIONS", 3_000_000)
    monkeypatch.setattr("conveyor.protocol.auth.MAX_ITERATIONS", 3_000_000)
    guess = asyncio.create_task(_guess(running.port, within=30))
    await asyncio.sleep(0.1)  # its check is under way
    loop = asyncio.get_running_loop()
    asked = loop.time()
    assert (await other.call(b"INFO")).startswith(b"$")
    answered = loop.time() - asked
    assert answered < 0.3, f"INFO waited {answered:.2f} s for a password check"
    assert not guess.done(), "the check ended before INFO was asked: nothing was shown"
    assert await guess == b"-ERR Invalid password\r\n"


async def test_commands_before_hello_close_silently(
    server: RunningServer, raw_client: RawConnect
) -> None:
    for first in (b"PUSH {}", b"INFO", b"HELLO nope", b'HELLO {"pid":"x"}', b'HELLO {"v":300}'):
        client = await raw_client(server.port, hello=None)
        await client.send(first)
        assert await client.closed_by_server(), first
    info = await server.manager.info()
    assert info["faktory"]["total_enqueued"] == 0


async def test_hello_deadline(make_server: MakeServer, raw_client: RawConnect) -> None:
    running = await make_server(handshake_timeout_seconds=0.2)
    client = await raw_client(running.port, hello=None)
    started = time.monotonic()
    assert await client.closed_by_server(within=3)
    assert 0.15 < time.monotonic() - started < 2
    # after a good HELLO there is no idle deadline
    ready = await raw_client(running.port)
    await asyncio.sleep(0.4)
    assert await ready.call(b"FETCH x") == b"$-1\r\n"


async def test_too_many_connections(make_server: MakeServer, raw_client: RawConnect) -> None:
    running = await make_server(max_connections=2)
    first = await raw_client(running.port)
    await raw_client(running.port)
    third = await raw_client(running.port, hello=None)
    await third.send(b'HELLO {"v":2}')
    assert await third.reply() == b"+OK\r\n"
    assert await third.reply() == b"-ERR too many connections: 3\r\n"
    assert await third.closed_by_server()
    assert await first.call(b"FETCH x") == b"$-1\r\n"


async def test_line_too_long(make_server: MakeServer, raw_client: RawConnect) -> None:
    running = await make_server(max_line_bytes=4096)
    client = await raw_client(running.port)
    reply = await client.call(b"PUSH " + b"x" * 5000)
    assert reply == b"-ERR line too long (max 4096 bytes)\r\n"
    assert await client.closed_by_server()
    other = await raw_client(running.port)
    payload = b'{"jid":"123456789","jobtype":"T","args":["' + b"y" * 3000 + b'"]}'
    assert await other.call(b"PUSH " + payload) == b"+OK\r\n"
    info = await running.manager.info()
    assert info["faktory"]["total_enqueued"] == 1


async def test_line_too_long_answers_earlier_commands_first(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    running = await make_server(max_line_bytes=2048)
    client = await raw_client(running.port)
    client.writer.write(b"FETCH a\r\nfoo\r\n" + b"z" * 3000 + b"\r\nINFO\r\n")
    assert await client.reply() == b"$-1\r\n"
    assert await client.reply() == b"-ERR unknown command foo\r\n"
    assert await client.reply() == b"-ERR line too long (max 2048 bytes)\r\n"
    assert await client.closed_by_server()


async def test_invalid_utf8_queue_names(server: RunningServer, raw_client: RawConnect) -> None:
    client = await raw_client(server.port)
    assert await client.call(b"FETCH \xff\xfe") == b"-ERR command is not valid UTF-8\r\n"
    assert await client.call(b"FETCH x") == b"$-1\r\n"


async def test_internal_errors_keep_the_connection(
    server: RunningServer, raw_client: RawConnect
) -> None:
    client = await raw_client(server.port)

    async def broken(*args: object) -> None:
        raise RuntimeError("boom")

    server.manager.flush = broken  # type: ignore[method-assign]
    assert await client.call(b"FLUSH") == b"-ERR internal error\r\n"
    assert await client.call(b"FETCH x") == b"$-1\r\n"


async def test_input_too_deep_for_a_decoder_is_bad_input_not_a_crash(
    server: RunningServer, raw_client: RawConnect, caplog: pytest.LogCaptureFixture
) -> None:
    """The dispatcher's net under every decoder: msgspec ends deep nesting with a
    RecursionError, which is the client's doing, so no ``internal error`` and no traceback."""
    client = await raw_client(server.port)

    async def too_deep(*args: object) -> None:
        raise RecursionError("maximum recursion depth exceeded while deserializing an object")

    server.manager.flush = too_deep  # type: ignore[method-assign]
    assert await client.call(b"FLUSH") == b"-ERR invalid JSON: nested too deeply\r\n"
    assert await client.call(b"FETCH x") == b"$-1\r\n"
    assert not [r for r in caplog.records if r.exc_info]


async def test_shutdown_answers_in_flight_and_refuses_next(
    server: RunningServer, raw_client: RawConnect
) -> None:
    busy = await raw_client(server.port)
    idle = await raw_client(server.port)
    await busy.send(b"FETCH empty")  # waits fetch_wait_seconds
    await asyncio.sleep(0.05)
    await busy.send(b"INFO")
    await server.server.stop()
    assert await busy.reply() == b"$-1\r\n"
    assert await busy.reply() == b"-ERR shutdown in progress\r\n"
    assert await busy.closed_by_server()
    assert await idle.closed_by_server()


async def test_worker_connections_register_and_leave(
    server: RunningServer, raw_client: RawConnect
) -> None:
    client = await raw_client(server.port, hello=b'{"v":2,"wid":"abc","hostname":"h","pid":5}')
    workers = await server.manager.workers()
    assert [w.record.wid for w in workers] == ["abc"]
    await client.send(b"END")
    assert await client.closed_by_server()
    for _ in range(100):
        if not await server.manager.workers():
            break
        await asyncio.sleep(0.01)
    assert await server.manager.workers() == []


async def test_silent_worker_is_reaped_and_its_connection_closed(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    from conveyor.manager import ManagerConfig

    running = await make_server(
        config=ManagerConfig(worker_timeout_seconds=0.2, worker_reaper_interval_seconds=0.05)
    )
    worker = await raw_client(running.port, hello=b'{"v":2,"wid":"silent"}')
    producer = await raw_client(running.port)
    assert await worker.closed_by_server(within=5)
    assert await producer.call(b'BEAT {"wid":"silent"}') == b"-ERR unknown worker silent\r\n"


# ------------------------------------------------------- idle connections, partial lines, memory


async def test_idle_connections_are_closed_and_busy_ones_are_not(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    from conveyor.manager import ManagerConfig

    running = await make_server(
        idle_timeout_seconds=0.3, config=ManagerConfig(fetch_wait_seconds=0.8)
    )
    idle = await raw_client(running.port)
    chatty = await raw_client(running.port)
    waiting = await raw_client(running.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await waiting.send(b"FETCH empty")  # a command at work for longer than the timeout
    while loop.time() - started < 0.7:
        assert await chatty.call(b"FETCH nothing-here", within=2) == b"$-1\r\n"
        await asyncio.sleep(0.1)
    assert await waiting.reply(within=2) == b"$-1\r\n"
    assert await idle.closed_by_server(within=2)  # silently, as Faktory's idle deadline
    assert len(running.server.connections) == 2
    assert await chatty.call(b"INFO") != b""
    assert await waiting.closed_by_server(within=2)  # idle since its reply


async def test_a_peer_that_reads_no_replies_is_cut_off(make_server: MakeServer) -> None:
    """Its replies fill the socket buffers and the runner waits on them: no progress, so it
    counts as idle, and the connection is aborted rather than closed (which would wait for
    the unread replies forever)."""
    running = await make_server(idle_timeout_seconds=0.3)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few replies
    sock.connect(("127.0.0.1", running.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    await reader.readline()
    writer.write(b'HELLO {"v":2}\r\n' + b"INFO\r\n" * 2000)  # and never read again
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while running.server.connections and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert not running.server.connections
    writer.transport.abort()


async def test_partial_lines_of_all_connections_share_one_budget(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    running = await make_server(max_line_bytes=2_000_000, max_partial_bytes=3_000_000)
    first, second, third = [await raw_client(running.port) for _ in range(3)]
    payload = msgspec.json.encode(
        {"jid": "partial-01", "jobtype": "T", "args": ["x" * 1_500_000], "queue": "part"}
    )
    first.writer.write(b"PUSH " + payload[:1_400_000])  # no newline yet
    await first.writer.drain()
    second.writer.write(b"y" * 1_800_000)
    assert await second.reply(within=5) == (
        b"-ERR server busy: partial lines of all connections over 3000000 bytes\r\n"
    )
    assert await second.closed_by_server()
    first.writer.write(payload[1_400_000:] + b"\r\n")  # the first one is unharmed
    assert await first.reply() == b"+OK\r\n"
    third.writer.write(b"PUSH " + payload[:1_400_000])  # the budget is free again
    await third.writer.drain()
    await asyncio.sleep(0.05)
    assert running.server.partial_bytes == 1_400_005
    third.writer.write(payload[1_400_000:] + b"\r\n")
    assert await third.reply() == b"+OK\r\n"
    assert running.server.partial_bytes == 0
    sizes = await running.manager.store.queue_sizes()
    assert sizes == {"part": 2}


async def test_a_closed_connection_is_freed_without_the_cycle_collector(
    server: RunningServer,
) -> None:
    """Issue 17: connections formed reference cycles (through their client record), so the
    memory of their partial lines waited for a full pass of the cycle collector."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        freed = []
        for hello in (b"", b'HELLO {"v":2}\r\n', b'HELLO {"v":2,"wid":"w-gone"}\r\n'):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            await reader.readline()
            (connection,) = server.server.connections
            ref = weakref.ref(connection)
            del connection
            writer.write(hello + b"INFO\r\n" * bool(hello) + b"x" * 100_000)  # a partial line
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.close()
            await writer.wait_closed()
            for _ in range(200):
                if not server.server.connections and not await server.manager.workers():
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.01)
            freed.append(ref() is None)
    finally:
        gc.enable()
    assert freed == [True, True, True]
    assert server.server.partial_bytes == 0
