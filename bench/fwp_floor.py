"""The floor of a Python FWP server: what the load-test shape costs one uvloop process that
does nothing else.

    python -m bench.fwp_floor --port 7419

Not a server anyone should use: jobs live in a dict of deques as the bytes pushed, the only
parsing is the verb, the queue names and the jid (found by ``bytes.index``), nothing is
validated, stored or counted, and every reply is a constant or the payload. It answers exactly
what ``fwp_load`` and Faktory's load tool send (HELLO, FLUSH, PUSH, FETCH with waiting, ACK,
FAIL, END) the way conveyor does: one ``transport.write`` per reply, one process, one thread.

``python -m bench.load_shape --stores floor`` runs it beside conveyor's stores and real
Faktory: the distance between this row and conveyor's memory store is the price of conveyor's
protocol layer and manager, and between the memory store and SQLite that of durable storage
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
from collections import defaultdict, deque

import uvloop

_HI = b'+HI {"v":2}\r\n'
_OK = b"+OK\r\n"


class Floor:
    """Queues of raw payloads, and the FETCHes waiting for them (oldest first)."""

    def __init__(self) -> None:
        self.queues: defaultdict[bytes, deque[bytes]] = defaultdict(deque)
        self.waiting: list[tuple[FloorConnection, list[bytes]]] = []
        self.working: dict[bytes, bytes] = {}

    def push(self, payload: bytes) -> None:
        start = payload.index(b'"queue":"') + 9
        queue = payload[start : payload.index(b'"', start)]
        for index, (connection, names) in enumerate(self.waiting):
            if queue in names:
                del self.waiting[index]
                connection.deliver(payload)
                return
        self.queues[queue].append(payload)

    def take(self, names: list[bytes]) -> bytes | None:
        for name in names:
            queue = self.queues.get(name)
            if queue:
                return queue.popleft()
        return None

    def hand_out(self, payload: bytes) -> None:
        start = payload.index(b'"jid":"') + 7
        self.working[payload[start : payload.index(b'"', start)]] = payload

    def finish(self, body: bytes) -> None:
        start = body.index(b'"jid":"') + 7
        self.working.pop(body[start : body.index(b'"', start)], None)


class FloorConnection(asyncio.Protocol):
    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(_HI)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.floor.waiting[:] = [w for w in self.floor.waiting if w[0] is not self]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n")) >= 0:
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            self.command(line)

    def deliver(self, payload: bytes) -> None:
        self.floor.hand_out(payload)
        assert self.transport is not None
        self.transport.write(b"$%d\r\n%s\r\n" % (len(payload), payload))

    def expire(self, waiter: tuple[FloorConnection, list[bytes]]) -> None:
        if waiter in self.floor.waiting:
            self.floor.waiting.remove(waiter)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"$-1\r\n")

    def command(self, line: bytes) -> None:
        assert self.transport is not None
        verb, _, rest = line.partition(b" ")
        if verb == b"PUSH":
            self.floor.push(rest)
            self.transport.write(_OK)
        elif verb == b"FETCH":
            names = rest.split()
            payload = self.floor.take(names)
            if payload is None:  # wait, as Faktory does, up to 2 s for a job
                waiter = (self, names)
                self.floor.waiting.append(waiter)
                asyncio.get_running_loop().call_later(2.0, self.expire, waiter)
            else:
                self.deliver(payload)
        elif verb in (b"ACK", b"FAIL"):
            self.floor.finish(rest)
            self.transport.write(_OK)
        elif verb == b"END":
            self.transport.close()
        else:  # HELLO, FLUSH
            self.transport.write(_OK)


async def serve(host: str, port: int) -> None:
    floor = Floor()
    server = await asyncio.get_running_loop().create_server(
        lambda: FloorConnection(floor), host, port
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7419)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
