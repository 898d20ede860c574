"""A damaged SQLite file: refused at start, or its changed payloads moved aside, never served.

Real files made by a real server, damaged byte by byte as a failing disk would (zeroed pages,
flipped bits), then opened by a real ``conveyor server``. What must hold (docs/operations.md,
"When things fail"): a file whose structure is broken is refused with one clear line and exit
code 2 (the server's code for "cannot start"); a payload whose bytes changed where
``PRAGMA quick_check`` cannot see it is detected by its checksum and moved aside into
``damaged_jobs``, not delivered.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import msgspec

from conveyor.store.base import QueuedJob, SetEntry, SortedSet
from conveyor.store.sqlite import SQLiteStore
from conveyor.store.sqlite.schema import SCHEMA_VERSION
from tests.support.server import TEST_TIMINGS_ENV, RawConnect, SpawnServer
from tests.support.services import require_binary

PAGE = 4096
JOBS = 200


def pushed(n: int) -> dict[str, object]:
    return {"jid": f"job-{n:05d}", "jobtype": "Work", "args": [f"arg-{n:05d}-" + "v" * 60]}


def sql(path: Path, query: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()


async def make_database(spawn_server: SpawnServer, raw_client: RawConnect, path: Path) -> None:
    """JOBS jobs pushed through a real server, which is then stopped cleanly (no WAL left)."""
    server = spawn_server(storage=f"sqlite:///{path}")
    client = await raw_client(server.port)
    for n in range(JOBS):
        assert await client.call(b"PUSH " + msgspec.json.encode(pushed(n))) == b"+OK\r\n"
    await client.close()
    assert server.terminate() == 0
    assert not path.with_name(path.name + "-wal").exists()


def leaf_pages(path: Path, table: str) -> list[int]:
    rows = sql(path, f"SELECT pageno FROM dbstat WHERE name = '{table}' AND pagetype = 'leaf'")
    return sorted(int(str(page)) for (page,) in rows)


def zero_pages(path: Path, pages: list[int]) -> None:
    data = bytearray(path.read_bytes())
    for page in pages:
        data[(page - 1) * PAGE : page * PAGE] = bytes(PAGE)
    path.write_bytes(bytes(data))


def start_server(path: Path) -> subprocess.CompletedProcess[str]:
    """``conveyor server`` on ``path``, expected to refuse to start (timeout otherwise)."""
    command = [sys.executable, "-c", "from conveyor.cli import main; main()", "server"]
    command += ["--bind", "127.0.0.1:0", "--web-bind", "off", "--storage", f"sqlite:///{path}"]
    env = {**TEST_TIMINGS_ENV, "PATH": "/usr/bin:/bin", "CONVEYOR_LOG_LEVEL": "warning"}
    return subprocess.run(command, capture_output=True, text=True, timeout=20, env=env)


async def test_zeroed_data_pages_are_refused_at_start(
    spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    path = tmp_path / "zeroed.db"
    await make_database(spawn_server, raw_client, path)
    zero_pages(path, leaf_pages(path, "queue_jobs")[2:5])
    before = path.read_bytes()

    done = start_server(path)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"Error: SQLite database '{path}' is damaged (")
    assert "docs/operations.md" in line
    assert path.read_bytes() == before  # refused without writing a byte


async def test_a_damaged_table_read_at_start_is_a_clear_message_not_a_traceback(
    spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    path = tmp_path / "queues-zeroed.db"
    await make_database(spawn_server, raw_client, path)
    (queues_page,) = leaf_pages(path, "queues")  # read at start to learn the known queues
    zero_pages(path, [queues_page])

    done = start_server(path)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "sqlite3." not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"Error: SQLite database '{path}' is damaged ("), line


RECOVER_BY_DUMP = (
    "sqlite3 {damaged} .dump | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/' | sqlite3 {recovered}"
)
"""The fallback recovery of docs/operations.md, for a sqlite3 without ``.recover``."""


def recover_by_dump(damaged: Path, recovered: Path) -> None:
    command = RECOVER_BY_DUMP.format(damaged=damaged, recovered=recovered)
    # .dump exits non-zero on the pages it cannot read: that is expected
    subprocess.run(["bash", "-c", command], check=False, capture_output=True, timeout=60)


async def test_the_documented_recovery_serves_what_survived(
    spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    require_binary("sqlite3")
    damaged, recovered = tmp_path / "damaged.db", tmp_path / "recovered.db"
    await make_database(spawn_server, raw_client, damaged)
    zero_pages(damaged, leaf_pages(damaged, "queue_jobs")[2:5])
    assert start_server(damaged).returncode == 2

    recover_by_dump(damaged, recovered)
    assert sql(recovered, "PRAGMA quick_check") == [("ok",)]

    server = spawn_server(storage=f"sqlite:///{recovered}")
    client = await raw_client(server.port)
    delivered: list[str] = []
    while (reply := await client.call(b"FETCH default")) != b"$-1\r\n":
        job = msgspec.json.decode(reply.split(b"\r\n")[1])
        assert job["args"] == pushed(int(job["jid"][4:]))["args"]
        delivered.append(job["jid"])
    await client.close()
    assert server.terminate() == 0
    # the jobs of the three zeroed pages are lost; every other one is served, once
    assert JOBS - 3 * 20 < len(delivered) < JOBS
    assert len(set(delivered)) == len(delivered)
    assert sql(recovered, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_changed_payloads_are_moved_aside_not_delivered(
    spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    path = tmp_path / "flipped.db"
    await make_database(spawn_server, raw_client, path)
    data = bytearray(path.read_bytes())
    damaged = {7: 0x01, 42: 0x20, 99: 0x80, 150: 0x7F, 199: 0x04}  # job -> bits to flip
    for n, bits in damaged.items():
        marker = f"arg-{n:05d}-".encode()
        assert data.count(marker) == 1
        data[data.find(marker) + len(marker) + 30] ^= bits  # a 'v' becomes another byte
    path.write_bytes(bytes(data))
    assert sql(path, "PRAGMA quick_check") == [("ok",)]  # SQLite cannot see this damage

    log = tmp_path / "server.log"
    server = spawn_server(storage=f"sqlite:///{path}", log_file=log)
    client = await raw_client(server.port)
    delivered: dict[str, bytes] = {}
    while (reply := await client.call(b"FETCH default")) != b"$-1\r\n":
        assert reply.startswith(b"$"), reply
        body = reply.split(b"\r\n")[1]
        job = msgspec.json.decode(body)  # valid UTF-8 JSON, or this raises
        delivered[job["jid"]] = body
        assert await client.call(b'ACK {"jid":"%s"}' % job["jid"].encode()) == b"+OK\r\n"
    await client.close()
    assert server.terminate() == 0

    damaged_jids = {f"job-{n:05d}" for n in damaged}
    assert set(delivered) == {f"job-{n:05d}" for n in range(JOBS)} - damaged_jids
    for jid, body in delivered.items():
        job = msgspec.json.decode(body)
        assert job["args"] == pushed(int(jid[4:]))["args"], jid
    aside = sql(path, "SELECT jid, source, payload FROM damaged_jobs ORDER BY jid")
    assert [(jid, source) for jid, source, _ in aside] == [
        (jid, "queue_jobs") for jid in sorted(damaged_jids)
    ]
    for jid, _, payload in aside:  # kept as found, for the operator to inspect
        assert isinstance(payload, bytes)
        assert f'"jid":"{jid}"'.encode() in payload
    output = server.output()
    assert "moved 5 damaged jobs aside" in output, output


async def test_a_payload_changed_while_serving_is_not_delivered(tmp_path: Path) -> None:
    path = tmp_path / "changed.db"
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    try:
        jobs = [
            QueuedJob("default", f"j{n}", b'{"jid":"j%d","args":[%d]}' % (n, n), 60)
            for n in range(3)
        ]
        await store.enqueue(jobs)
        with contextlib.closing(sqlite3.connect(path)) as other:  # the bytes change under us
            other.execute("UPDATE queue_jobs SET payload = x'7b22ff7d' WHERE jid = 'j1'")
            other.commit()
        taken = await store.reserve(["default"], "w1", 1.0, count=3)
        assert [(r.jid, r.payload) for r in taken] == [
            ("j0", jobs[0].payload),
            ("j2", jobs[2].payload),
        ]
        assert await store.queue_sizes() == {"default": 0}
    finally:
        await store.close()
    assert sql(path, "SELECT jid, source, payload FROM damaged_jobs") == [
        ("j1", "queue_jobs", b'{"\xff}')
    ]


# The schema of SCHEMA_VERSION 1, as conveyor 0.x wrote it (frozen: never edit).
SCHEMA_V1 = """
CREATE TABLE queues (name TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE queue_jobs (
    seq INTEGER PRIMARY KEY, queue TEXT NOT NULL, jid TEXT NOT NULL,
    reserve_for INTEGER NOT NULL, payload BLOB NOT NULL
);
CREATE INDEX queue_jobs_fifo ON queue_jobs (queue, seq);
CREATE TABLE reservations (
    jid TEXT PRIMARY KEY, queue TEXT NOT NULL, wid TEXT NOT NULL, reserved_at REAL NOT NULL,
    expires_at REAL NOT NULL, payload BLOB NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (expires_at, jid);
CREATE INDEX reservations_age ON reservations (reserved_at, jid);
CREATE TABLE set_entries (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, jid TEXT NOT NULL, score REAL NOT NULL,
    queue TEXT NOT NULL, jobtype TEXT NOT NULL, payload BLOB NOT NULL
);
CREATE UNIQUE INDEX set_entries_jid ON set_entries (name, jid);
CREATE INDEX set_entries_score ON set_entries (name, score, jid);
CREATE TABLE counters (
    day TEXT PRIMARY KEY, processed INTEGER NOT NULL, failures INTEGER NOT NULL
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def make_v1_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA_V1)
        conn.executemany(
            "INSERT INTO queues (name, paused) VALUES (?, ?)", [("default", 0), ("slow", 1)]
        )
        conn.executemany(
            "INSERT INTO queue_jobs (queue, jid, reserve_for, payload) VALUES (?, ?, ?, ?)",
            [
                ("default", "q1", 60, b'{"jid":"q1","args":[1]}'),
                ("default", "q2", 60, b'{"jid":"q2","args":[2]}'),
                ("slow", "q3", 90, b'{"jid":"q3","args":[3]}'),
            ],
        )
        conn.execute(
            "INSERT INTO reservations VALUES ('r1', 'default', 'w1', 10.0, 70.0, ?)",
            (b'{"jid":"r1","args":[]}',),
        )
        conn.execute(
            "INSERT INTO set_entries (name, jid, score, queue, jobtype, payload)"
            " VALUES ('retries', 's1', 5.0, 'default', 'Work', ?)",
            (b'{"jid":"s1","args":[]}',),
        )
        conn.execute("INSERT INTO counters VALUES ('', 7, 2)")
        conn.commit()


async def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    make_v1_database(path)

    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.queue_sizes() == {"default": 2, "slow": 1}
        assert await store.paused_queues() == {"slow"}
        reservation = await store.get_reservation("r1")
        assert reservation is not None
        assert reservation.payload == b'{"jid":"r1","args":[]}'
        assert await store.due_entries(SortedSet.RETRIES, 10.0, 5) == [
            SetEntry(5.0, "s1", b'{"jid":"s1","args":[]}', "default", "Work")
        ]
        taken = await store.reserve(["default"], "w2", 20.0, count=5)
        assert [r.jid for r in taken] == ["q1", "q2"]
        assert (await store.counters()).processed == 7
    finally:
        await store.close()

    assert sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 4
    for table in ("queue_jobs", "reservations", "set_entries"):
        for payload, crc in sql(path, f"SELECT payload, crc FROM {table}"):
            assert isinstance(payload, bytes)
            assert crc == zlib.crc32(payload), table
    assert sql(path, "SELECT count(*) FROM damaged_jobs") == [(0,)]
    # and it opens again as a current database, nothing moved aside
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.queue_sizes() == {"default": 0, "slow": 1}
        assert len((await store.list_reservations(0, 10)).items) == 3
    finally:
        await store.close()
    assert json.loads(sql(path, "SELECT payload FROM queue_jobs WHERE wid IS NULL")[0][0]) == {
        "jid": "q3",
        "args": [3],
    }
