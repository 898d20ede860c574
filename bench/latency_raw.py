"""A/B of conveyor trees on idle-worker latency as any Faktory client sees it, interleaved.

    python -m bench.latency_raw --a main --b working --stores sqlite,redis --rounds 3

A worker connection sends a plain ``FETCH default`` and waits; 4 ms later a producer
connection sends a ``PUSH``; the time from sending the PUSH to reading the FETCH's reply is
one probe. Both sides are blocking sockets with ``TCP_NODELAY`` in this process (one command
in flight, as the Go, Ruby and Node clients send it), so what is measured is the server's
path from a PUSH to the waiting FETCH, not a client library's. ``bench.latency_ab`` measures
the same with conveyor's own asyncio client. Each round starts a fresh server of each tree
and store, in turn; prints each round's p50 and p99 and their medians. Nothing here is a
test; no timed assertions.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from contextlib import ExitStack

from bench.load_ab import tree
from bench.load_shape import conveyor


def _send(sock: socket.socket, line: bytes) -> None:
    sock.sendall(line + b"\r\n")


def _reply(sock: socket.socket) -> bytes:
    """One reply: a simple string or error line, or a bulk string read whole."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
        if data[:1] in (b"+", b"-") and data.endswith(b"\r\n"):
            return data
        if data[:1] == b"$" and data.count(b"\r\n") >= 2:
            return data


def _connect(port: int, wid: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _reply(sock)  # +HI
    hello = {"v": 2, "wid": wid, "pid": 1, "labels": [], "hostname": "bench"}
    _send(sock, b"HELLO " + json.dumps(hello).encode())
    _reply(sock)
    return sock


def probe(port: int, probes: int) -> tuple[float, float]:
    """(p50, p99) in milliseconds of PUSH sent -> waiting FETCH answered."""
    worker, producer = _connect(port, "bench-worker"), _connect(port, "bench-producer")
    seconds = []
    try:
        for i in range(probes):
            _send(worker, b"FETCH default")
            time.sleep(0.004)  # the FETCH is waiting now
            start = time.perf_counter()
            _send(producer, b'PUSH {"jid":"probe-%012d","jobtype":"Probe","args":[]}' % i)
            _reply(worker)
            seconds.append(time.perf_counter() - start)
            _reply(producer)
    finally:
        worker.close()
        producer.close()
    seconds.sort()
    return seconds[len(seconds) // 2] * 1e3, seconds[int(len(seconds) * 0.99)] * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_raw", description=__doc__)
    parser.add_argument("--a", default="main", help="a git ref, or 'working'")
    parser.add_argument("--b", default="working", help="a git ref, or 'working'")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probes", type=int, default=600, help="probes per round")
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    results: dict[str, list[tuple[float, float]]] = {}
    with ExitStack() as stack:
        paths = {"A": stack.enter_context(tree(args.a)), "B": stack.enter_context(tree(args.b))}
        for index in range(args.rounds):
            for store in stores:
                for side in ("A", "B") if index % 2 == 0 else ("B", "A"):
                    with conveyor(store, {"PYTHONPATH": paths[side]}) as server:
                        p50, p99 = probe(server.port, args.probes)
                    results.setdefault(f"{side}:{store}", []).append((p50, p99))
                    print(f"[latency] round {index + 1} {side}:{store} p50 {p50:.3f} "
                          f"p99 {p99:.3f} ms", flush=True)  # fmt: skip
    print(f"A = {args.a}, B = {args.b}; {args.rounds} rounds of {args.probes} probes; "
          "medians of the rounds, ms")  # fmt: skip
    for key in sorted(results, key=lambda k: (k.split(":")[1], k)):
        rows = results[key]
        p50 = statistics.median(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        print(f"  {key:9s} p50 {p50:.3f}  p99 {p99:.3f}")


if __name__ == "__main__":
    main()
