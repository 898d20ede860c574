"""Drive a Faktory-compatible server with the PyPI clients ``faktory`` (cdrx) and ``pyfaktory``.

Run as a child process by ``tests/test_interop_python.py`` (a separate process, like a real
producer or worker: the clients block, and pyfaktory runs a heartbeat thread). It talks to
``FAKTORY_URL`` through each library's own API, or through the connection object's raw command
method exactly as the library's own worker does where there is no wrapper, and prints ONE JSON
line with what the server answered.

    FAKTORY_URL=tcp://:pw@127.0.0.1:7419 python tests/interop/python_clients.py cdrx
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

WID = "interop-worker-1"


def future_time() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


# -- cdrx: faktory 1.0.0 -------------------------------------------------------------------------


def cdrx() -> dict[str, Any]:
    import faktory
    from faktory._proto import Connection

    result: dict[str, Any] = {}
    # Producer API: Client.queue sends json.dumps (with spaces), priority 5, retry 5, no "v".
    with faktory.connection() as client:
        result["queued"] = [
            client.queue("Add", args=(1, 2), jid="cdrx-job-1"),
            client.queue("Boom", args=["x"], queue="critical", jid="cdrx-job-2", custom={"a": 1}),
            client.queue("Later", args=[], jid="cdrx-job-3", at=future_time()),
            client.queue("Later", args=[], jid="cdrx-job-4", at=future_time()),
        ]

    # Worker side: the very calls faktory.Worker makes (fetch, _ack, _fail, heartbeat).
    conn = Connection(worker_id=WID, labels=["cdrx"])
    conn.connect(worker_id=WID)

    def command(name: str, data: Any = None) -> str:
        conn.reply(name, data)
        return str(next(conn.get_message()))

    first = conn.fetch(["critical", "default"])
    second = conn.fetch(["critical", "default"])
    result["fetched"] = [first, second]
    result["ack"] = command("ACK", {"jid": second["jid"]})
    result["fail"] = command("FAIL", {"jid": first["jid"], "errtype": "E", "message": "boom"})
    result["beat"] = command("BEAT", {"wid": WID})
    result["empty_fetch"] = conn.fetch(["default"])
    result["info"] = json.loads(command("INFO"))
    # MUTATE must be compact for Faktory; cdrx has no wrapper, so send the string ourselves,
    # then what cdrx's reply() makes of a dict (json.dumps with spaces) to record the answer.
    result["mutate"] = command(
        "MUTATE", '{"cmd":"kill","target":"scheduled","filter":{"jids":["cdrx-job-3"]}}'
    )
    result["mutate_spaced"] = command(
        "MUTATE", {"cmd": "discard", "target": "scheduled", "filter": {"jids": ["cdrx-job-4"]}}
    )
    result["after_mutate"] = json.loads(command("INFO"))["faktory"]["sets"]
    result["pause"] = command("QUEUE", "PAUSE critical")
    result["resume"] = command("QUEUE", "RESUME critical")
    result["latency"] = json.loads(command("QUEUE", "LATENCY default critical"))
    result["remove"] = command("QUEUE", "REMOVE critical")
    result["unknown"] = command("NOPE")
    result["final_info"] = json.loads(command("INFO"))
    conn.disconnect()
    return result


# -- pyfaktory 0.2.13 ----------------------------------------------------------------------------


def pyfaktory() -> dict[str, Any]:
    from pyfaktory import Client, Job, Producer
    from pyfaktory.models import JobFilter, MutateOperation

    result: dict[str, Any] = {}
    with Client(role="producer") as client:
        producer = Producer(client=client)
        result["push"] = [
            producer.push(Job(jobtype="Add", args=[1, 2], jid="pyf-job-1")),
            producer.push(Job(jobtype="Boom", args=[], queue="critical", jid="pyf-job-2")),
            producer.push(Job(jobtype="Later", args=[], jid="pyf-job-3", at=future_time())),
        ]
        result["push_bulk"] = producer.push_bulk(
            [Job(jobtype="Bulk", args=[n], jid=f"pyf-bulk-{n}") for n in range(3)]
        )
        result["push_bulk_bad"] = producer.push_bulk(
            [
                Job(jobtype="Ok", args=[], jid="pyf-bulk-ok"),
                Job(jobtype="", args=[], jid="pyf-bad-job"),
            ]
        )
        result["info"] = client.info()
        kill = MutateOperation(
            cmd="kill",
            target="scheduled",
            filter=JobFilter(jids=["pyf-job-3"], regexp=None, jobtype=None),
        )
        result["mutate_kill"] = client.mutate(kill)
        result["after_kill"] = client.info()["faktory"]["sets"]
        requeue = MutateOperation(
            cmd="requeue", target="dead", filter=JobFilter(jids=None, regexp=None, jobtype="Later")
        )
        result["mutate_requeue"] = client.mutate(requeue)
        result["after_requeue"] = client.info()["faktory"]
        result["pause"] = client.queue_pause(["critical"])
        result["resume_all"] = client.queue_unpause(all_queues=True)

    # Consumer: the calls pyfaktory.Consumer makes, with a fast heartbeat thread running.
    worker = Client(role="consumer", worker_id=WID, labels=["pyfaktory"], beat_period=0.05)
    worker.connect()
    fetched = [worker._fetch(["critical", "default"]) for _ in range(2)]
    result["fetched"] = fetched
    result["ack"] = worker._ack(jid=fetched[1]["jid"])
    result["fail"] = worker._fail(
        jid=fetched[0]["jid"], errtype="KeyError", message="missing", backtrace=["a.py:1"]
    )
    time.sleep(0.3)  # let the heartbeat thread BEAT a few times
    result["beat"] = worker._beat()
    result["worker_info"] = worker._info()
    _stop_heartbeat(worker)
    worker.disconnect()

    with Client(role="producer") as client:
        result["remove"] = client.queue_remove(["default"])
        result["final_info"] = client.info()
    return result


def _stop_heartbeat(client: Any) -> None:
    """pyfaktory's heartbeat thread beats until the state leaves IDENTIFIED; if ``disconnect``
    wins the race for the lock, the thread's next BEAT raises. Let it finish its loop first."""
    from pyfaktory.util.enums import State

    with client.rlock:
        client.state = State.QUIET
        client.state = State.DISCONNECTED
    client.heartbeat_thread.join(5)
    client.state = State.IDENTIFIED


def pyfaktory_batch() -> dict[str, Any]:
    """pyfaktory's Enterprise batch calls: BATCH NEW (callbacks without jids, as it sends
    them), jobs joining by custom.bid, COMMIT, STATUS; then a worker runs the jobs and the
    success callback they fire."""
    from pyfaktory import Client, Job, Producer
    from pyfaktory.models import Batch, TargetJob

    def bulk_text(reply: str) -> str:
        return reply.split("\r\n")[1]

    result: dict[str, Any] = {}
    with Client(role="producer") as client:
        producer = Producer(client=client)
        done = TargetJob(jobtype="AlbumDone", args=["summer"], queue="callbacks")
        spec = Batch(parent_bid=None, description="interop", success=done, complete=None)
        bid = bulk_text(producer.batch_new(spec))
        result["bid"] = bid
        jobs = [Job(jobtype="Resize", args=[n], custom={"bid": bid}) for n in range(3)]
        result["push"] = [producer.push(job) for job in jobs]
        result["commit"] = producer.batch_commit(bid)
        result["status_before"] = json.loads(bulk_text(client._batch_status(bid)))
    worker = Client(role="consumer", worker_id=WID, labels=["pyfaktory"], beat_period=0.05)
    worker.connect()
    for _ in range(3):
        fetched = worker._fetch(["default"])
        worker._ack(jid=fetched["jid"])
    callback = worker._fetch(["callbacks"])
    result["callback"] = callback
    worker._ack(jid=callback["jid"])
    result["status_after"] = json.loads(bulk_text(worker._batch_status(bid)))
    result["open_unknown"] = repr(_error_of(lambda: worker._batch_status("b-nope")))
    _stop_heartbeat(worker)
    worker.disconnect()
    return result


def _error_of(call: Callable[[], Any]) -> BaseException | None:
    try:
        call()
    except Exception as exc:
        return exc
    return None


def cdrx_aggregate() -> dict[str, Any]:
    """Jobs to aggregate pushed with cdrx's ``custom`` (docs/aggregation.md), and the one job
    they become fetched as its worker would."""
    import faktory
    from faktory._proto import Connection

    custom = {"group": "fk", "aggregate": {"max_size": 3, "max_delay": 5, "grace": 5}}
    with faktory.connection() as client:
        queued = [
            client.queue("Sum", args=[n], jid=f"cdrx-sum-{n}", custom=custom) for n in range(3)
        ]
    conn = Connection(worker_id=WID, labels=["cdrx"])
    conn.connect(worker_id=WID)
    fetched = conn.fetch(["default"])
    conn.reply("ACK", {"jid": fetched["jid"]})
    acked = str(next(conn.get_message()))
    conn.disconnect()
    return {"queued": queued, "fetched": fetched, "ack": acked}


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "cdrx": cdrx,
    "pyfaktory": pyfaktory,
    "pyfaktory-batch": pyfaktory_batch,
    "cdrx_aggregate": cdrx_aggregate,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]]()))
