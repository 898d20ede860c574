"""A TCP proxy between conveyor and Redis that loses replies on demand.

``FaultProxy`` listens on a free loopback port and relays every connection to a real Redis.
A rule armed with ``lose_reply(marker)`` waits for a command whose bytes contain ``marker``
(a script's SHA1, say), relays the command to Redis, and when Redis answers, cuts the client's
connection instead of relaying the reply: Redis ran the command, the client never learns it.
``lose_request(marker)`` cuts the connection before the command reaches Redis.

The clients under test send one command and wait for its reply on each connection (redis-py
does), so the first bytes Redis sends after an armed command are that command's reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from tests.support.services import RedisServer

__all__ = ["FaultProxy", "fault_proxy"]

CHUNK = 65536


@dataclass
class _Rule:
    marker: bytes
    times: int
    before: bool  # cut before the command reaches Redis (else after Redis answered it)
    then: Callable[[], Awaitable[None]] | None = None
    late: float | None = None  # deliver a cut request to Redis after this many seconds
    answer: bytes = b""  # answer this instead of Redis (the command does not reach Redis)
    hits: int = 0


class FaultProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target_port = target_port
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._rules: list[_Rule] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self.cuts = 0
        """How many connections a rule has cut so far."""

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def lose_reply(
        self, marker: bytes, times: int = 1, then: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """The next ``times`` commands containing ``marker`` run, and their replies are lost.

        ``then`` runs after Redis answered and before the client's connection is cut: what
        another server does while the client does not know yet."""
        self._rules.append(_Rule(marker, times, before=False, then=then))

    def lose_request(self, marker: bytes, times: int = 1, late: float | None = None) -> None:
        """The next ``times`` commands containing ``marker`` are lost on their way to Redis:
        the client's connection is cut. With ``late``, the command still reaches Redis that
        many seconds later (a packet stuck in the network), after any retry."""
        self._rules.append(_Rule(marker, times, before=True, late=late))

    def answer_instead(self, marker: bytes, reply: bytes, times: int = 1) -> None:
        """The next ``times`` commands containing ``marker`` get ``reply`` (raw RESP, e.g. an
        error Redis might send) from the proxy; Redis never sees them."""
        self._rules.append(_Rule(marker, times, before=False, answer=reply))

    def clear(self) -> None:
        self._rules.clear()

    def _match(self, data: bytes) -> _Rule | None:
        for rule in self._rules:
            if rule.hits < rule.times and rule.marker in data:
                rule.hits += 1
                return rule
        return None

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_w.close()
            return
        cut = asyncio.Event()
        armed: list[_Rule] = []
        late: list[asyncio.Task[None]] = []

        async def deliver(data: bytes, delay: float) -> None:
            await asyncio.sleep(delay)
            server_w.write(data)
            await server_w.drain()
            await server_r.read(CHUNK)  # Redis ran it; nobody hears the reply

        async def upstream() -> None:
            tail = b""
            while not cut.is_set():
                data = await client_r.read(CHUNK)
                if not data:
                    break
                rule = self._match(tail + data)
                tail = data[-256:]
                if rule is not None and rule.answer:
                    client_w.write(rule.answer)
                    await client_w.drain()
                    continue
                if rule is not None and rule.before:
                    self.cuts += 1
                    cut.set()
                    if rule.late is not None:
                        late.append(asyncio.create_task(deliver(data, rule.late)))
                    break
                if rule is not None:
                    armed.append(rule)
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while not cut.is_set():
                data = await server_r.read(CHUNK)
                if not data:
                    break
                if armed:
                    self.cuts += 1
                    cut.set()
                    if armed[0].then is not None:
                        await armed[0].then()
                    break
                client_w.write(data)
                await client_w.drain()

        pumps = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._pumps.difference_update(pumps)
            client_w.close()
            if late:
                self._pumps.update(late)
                await asyncio.gather(*late, return_exceptions=True)
                self._pumps.difference_update(late)
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()


@pytest.fixture
async def fault_proxy(kv_server: RedisServer) -> AsyncIterator[FaultProxy]:
    """A proxy in front of the session's redis-server, then its valkey-server, emptied."""
    proxy = FaultProxy(kv_server.port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
