"""Plain data the manager exchanges with its adapters (FWP server, web app, in-process client)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ClientInfo", "ServerStats", "WorkerState"]


class WorkerState:
    """Worker states; they only ever move forward: running -> quiet -> terminate."""

    RUNNING = "running"
    QUIET = "quiet"
    TERMINATE = "terminate"
    ORDER = {RUNNING: 0, QUIET: 1, TERMINATE: 2}


@dataclass(slots=True)
class ClientInfo:
    """What a connection said in its HELLO (after the password was checked by the server).

    ``close`` is how the manager asks the adapter to close this connection (heartbeat reaper).
    """

    wid: str = ""
    hostname: str = ""
    pid: int = 0
    labels: list[str] = field(default_factory=list)
    version: int = 0
    username: str = ""
    close: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class ServerStats:
    """What only the network adapter knows, for INFO's ``server`` section."""

    connections: int = 0
    command_count: int = 0
