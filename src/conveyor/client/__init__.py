"""The low-level Python client: one FWP connection, one method per command.

``Client`` is asyncio; ``SyncClient`` is the same client for blocking code (a thin facade that
runs it on a private event loop thread). Both work with any Faktory server; ``fetch_many`` and
``ack_many`` are conveyor extensions (``FETCHB`` / ``ACKB``, see ``docs/protocol.md``).

    async with await Client.connect("tcp://localhost:7419") as client:
        jid = await client.push({"jobtype": "resize", "args": ["a.png", 640]})
"""

from __future__ import annotations

from conveyor.client._connection import DEFAULT_TIMEOUT_SECONDS, Client, new_jid
from conveyor.client._sync import SyncClient
from conveyor.client._url import DEFAULT_URL, ServerAddress, parse_url, resolve_url

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFAULT_URL",
    "Client",
    "ServerAddress",
    "SyncClient",
    "new_jid",
    "parse_url",
    "resolve_url",
]
